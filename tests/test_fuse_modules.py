"""fuse() of modules that are not mnv4_reference models: a timm MobileNetV4, or any module that only carries the
parameters. The variant comes from the module's record (timm's pretrained_cfg['architecture']), else
name=, else its state dict; the state dicts that several variants share need the record or the name.

timm itself is not a dependency: its models are stood in for by plain nn.Modules holding exactly timm's
state-dict keys, shapes and dtypes (spec/timm_keys, written from timm), on the meta device where only the
variant is asked for, and holding a reference model's weights where the fused model is run.
"""

import os

import pytest
import torch
import torch.nn as nn

from mnv4_kernels import fuse
from mnv4_kernels.fuse import variant_of
from mnv4_reference import MODEL_NAMES, randomized_model
from mnv4_reference.testing import rel_err

SHARED_STATE_DICTS = [("mobilenetv4_conv_medium", "mobilenetv4_conv_aa_medium", "mobilenetv4_conv_blur_medium"),
                      ("mobilenetv4_conv_large", "mobilenetv4_conv_aa_large")]
AMBIGUOUS = {n for group in SHARED_STATE_DICTS for n in group}


class StandIn(nn.Module):
    """Only parameters and buffers, under the given dotted names (no MobileNetV4 code, no forward)."""

    def __init__(self, tensors: dict, pretrained_cfg=None):
        super().__init__()
        for key, v in tensors.items():
            *path, leaf = key.split(".")
            m = self
            for p in path:
                if p not in m._modules:
                    m.add_module(p, nn.Module())
                m = m._modules[p]
            if v.is_floating_point() and not leaf.startswith("running_"):
                m.register_parameter(leaf, nn.Parameter(v.detach().clone()))
            else:
                m.register_buffer(leaf, v.detach().clone())
        if pretrained_cfg is not None:
            self.pretrained_cfg = self.default_cfg = pretrained_cfg


def _timm_state_dict(shared_dir, name):
    """timm's state dict of `name` as meta tensors (keys, shapes, dtypes from spec/timm_keys)."""
    out = {}
    with open(os.path.join(shared_dir, "spec", "timm_keys", f"timm_keys_{name}.txt")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            k, shape, dtype = line.rstrip("\n").split("\t")
            shape = tuple(int(d) for d in shape.strip("(),").split(",") if d.strip())
            out[k] = torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
    return out


def _timm_cfg(name):
    """What timm puts on a model: pretrained_cfg with the architecture name and a weight tag (abridged)."""
    return {"architecture": name, "tag": "e2400_r224_in1k", "num_classes": 1000, "input_size": (3, 224, 224)}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_variant_from_record_name_and_state_dict(shared_dir, name):
    sd = _timm_state_dict(shared_dir, name)
    assert variant_of(StandIn(sd, _timm_cfg(name))) == name  # timm's record
    assert variant_of(StandIn(sd, {"architecture": f"{name}.e500_r256_in1k"})) == name  # arch.tag form
    assert variant_of(StandIn(sd), name=name) == name  # an explicit name
    if name in AMBIGUOUS:
        group = next(g for g in SHARED_STATE_DICTS if name in g)
        with pytest.raises(ValueError) as e:
            variant_of(StandIn(sd))
        for other in group:
            assert other in str(e.value)
        assert "name=" in str(e.value)
    else:
        assert variant_of(StandIn(sd)) == name  # keys and shapes alone
        # any number of classes, no classifier, no num_batches_tracked: still the same variant
        sd2 = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
        sd2["classifier.weight"] = torch.empty(7, sd["classifier.weight"].shape[1], device="meta")
        sd2["classifier.bias"] = torch.empty(7, device="meta")
        assert variant_of(StandIn(sd2)) == name
        assert variant_of(StandIn({k: v for k, v in sd.items() if not k.startswith("classifier.")})) == name


def test_unrecognised_modules_are_type_errors(shared_dir):
    with pytest.raises(TypeError, match="twelve MobileNetV4 variants"):
        fuse(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="MobileNetV4 nn.Module"):
        fuse({"conv_stem.weight": torch.randn(32, 3, 3, 3)})
    # a MobileNetV4-like state dict with one layer too many: the nearest variant and the difference are named
    sd = _timm_state_dict(shared_dir, "mobilenetv4_conv_small")
    sd["blocks.9.0.conv.weight"] = torch.empty(8, 8, 1, 1, device="meta")
    with pytest.raises(TypeError, match=r"nearest, mobilenetv4_conv_small: 1 unexpected \(blocks\.9\.0\.conv\.weight"):
        fuse(StandIn(sd))
    # a timm model of another architecture
    with pytest.raises(TypeError, match="records architecture 'resnet50'"):
        fuse(StandIn({"fc.weight": torch.randn(2, 2)}, {"architecture": "resnet50"}))


def test_record_and_name_must_agree(shared_dir):
    sd = _timm_state_dict(shared_dir, "mobilenetv4_conv_medium")
    with pytest.raises(ValueError, match="records architecture 'mobilenetv4_conv_medium'"):
        variant_of(StandIn(sd, _timm_cfg("mobilenetv4_conv_medium")), name="mobilenetv4_conv_aa_medium")
    with pytest.raises(ValueError, match="name must be one of"):
        variant_of(StandIn(sd), name="mobilenetv4_conv_tiny")


_SUBJECTS = {}


def _subject(name):
    if name not in _SUBJECTS:
        x = torch.randn(2, 3, 64, 56, generator=torch.Generator().manual_seed(1))
        _SUBJECTS[name] = (randomized_model(name, seed=2, num_classes=10, input_size=(64, 56)), x)
    return _SUBJECTS[name]


@pytest.mark.parametrize("name,record,backend", [("mobilenetv4_conv_small_035", False, "reference"),
                                                 ("mobilenetv4_conv_small_035", False, "auto"),
                                                 ("mobilenetv4_hybrid_medium_075", True, "auto")])
def test_fused_stand_in_equals_fused_reference(name, record, backend):
    """A module holding a reference model's weights (no mnv4_reference class) fuses into the same model:
    the same buffers, the same logits, as the reference computes them."""
    ref, x = _subject(name)
    standin = StandIn(ref.state_dict(), _timm_cfg(name) if record else None)
    fused = fuse(standin, backend=backend)
    want = fuse(ref, backend=backend)
    assert fused.model_name == name and fused.num_classes == 10
    a, b = fused.state_dict(), want.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(fused(x), want(x))
        assert rel_err(fused(x), ref(x)) <= 1e-5
    # the stand-in was only read
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in standin.state_dict().items())


def test_ambiguous_state_dict_takes_the_recorded_network():
    """conv_aa_medium's weights in a stand-in: with timm's record the anti-aliased network runs (the reference
    aa model's logits); a guess of conv_medium would compute another function from the same weights."""
    aa, x = _subject("mobilenetv4_conv_aa_medium")
    with pytest.raises(ValueError, match="mobilenetv4_conv_aa_medium"):
        fuse(StandIn(aa.state_dict()))
    by_record = fuse(StandIn(aa.state_dict(), _timm_cfg("mobilenetv4_conv_aa_medium")), backend="reference")
    by_name = fuse(StandIn(aa.state_dict()), backend="reference", name="mobilenetv4_conv_aa_medium")
    wrong = fuse(StandIn(aa.state_dict()), backend="reference", name="mobilenetv4_conv_medium")
    with torch.no_grad():
        want = aa(x)
        assert rel_err(by_record(x), want) <= 1e-5 and rel_err(by_name(x), want) <= 1e-5
        assert rel_err(wrong(x), want) > 1e-2  # same weights, another network: why fuse() does not guess


def test_no_classifier_and_no_step_counters():
    ref, x = _subject("mobilenetv4_conv_small_035")
    sd = {k: v for k, v in ref.state_dict().items()
          if not k.startswith("classifier.") and not k.endswith("num_batches_tracked")}
    fused = fuse(StandIn(sd), backend="reference")
    assert fused.num_classes == 0
    with torch.no_grad():
        assert rel_err(fused(x), ref.forward_head(ref.forward_features(x), pre_logits=True)) <= 1e-5


def test_half_precision_stand_in_is_read_in_float32():
    """A timm model cast to fp16 (its weights in half precision) folds from its fp16 values, upcast."""
    ref, x = _subject("mobilenetv4_conv_small_035")
    half = {k: v.half() if v.is_floating_point() else v for k, v in ref.state_dict().items()}
    fused = fuse(StandIn(half, _timm_cfg("mobilenetv4_conv_small_035")), backend="reference")
    assert fused.dtype == torch.float32
    ref16 = type(ref)("mobilenetv4_conv_small_035", num_classes=10)
    ref16.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    with torch.no_grad():
        assert rel_err(fused(x), ref16.eval()(x)) <= 1e-5


def test_wrong_shape_with_a_record_names_the_key():
    ref, _ = _subject("mobilenetv4_conv_small_035")
    sd = dict(ref.state_dict())
    sd["conv_head.weight"] = sd["conv_head.weight"][:, :-1]
    with pytest.raises(ValueError, match=r"does not fit mobilenetv4_conv_small_035: 1 with another shape "
                                         r"\(conv_head\.weight"):
        fuse(StandIn(sd, _timm_cfg("mobilenetv4_conv_small_035")))
