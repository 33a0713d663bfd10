"""fuse() / load(): folded model == reference (fp32, fp64, bf16), golden files, backends, compile and export."""

import copy
import os

import pytest
import torch

import mnv4_kernels
from mnv4_kernels import BackendError, FusedMobileNetV4, backends, fuse, load
from mnv4_reference import MODEL_NAMES, randomized_model
from mnv4_reference.testing import rel_err

SIZE = (96, 80)
HYBRIDS = [n for n in MODEL_NAMES if "hybrid" in n]


def _inputs(seed=0, size=SIZE):
    """A calibration batch of 16 and the 2 images evaluated (part of it; see mnv4_reference.randomize)."""
    xc = torch.randn(16, 3, *size, generator=torch.Generator().manual_seed(seed))
    return xc, xc[:2]


_CACHE = {}


def _subject(name, seed=0):
    key = (name, seed)
    if key not in _CACHE:
        xc, x = _inputs(seed)
        _CACHE[key] = (randomized_model(name, seed=seed, num_classes=100, calibration_input=xc), x)
    return _CACHE[key]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fused_matches_reference_fp32(name):
    ref, x = _subject(name)
    fused = fuse(ref, backend="reference")
    assert isinstance(fused, FusedMobileNetV4) and fused.model_name == name and fused.num_classes == 100
    with torch.no_grad():
        want = ref(x)
        got = fused(x)
        feats = fused.forward_features(x)
    assert want.abs().max() > 1e-2  # the network is not ~identity / ~zero
    assert rel_err(got, want) <= 1e-5
    assert feats.shape[1] == ref.num_features
    kinds = [k for _, k, _ in fused.block_backends]
    assert kinds.count("mqa") == sum(b.kind == "mqa" for _, b in ref.named_blocks())
    assert kinds.count("uib") == sum(b.kind == "uir" for _, b in ref.named_blocks())
    composite = [n for n, _, b in fused.block_backends if b == "composite"]
    if ref.aa_layer is not None:
        assert composite == ["blocks.1.0", "blocks.2.0", "blocks.3.0"]
    else:
        assert composite == []
    assert {b for _, k, b in fused.block_backends if k in ("uib", "mqa")} <= {"reference", "composite"}


@pytest.mark.parametrize("name", ["mobilenetv4_conv_small", "mobilenetv4_hybrid_medium_075",
                                  "mobilenetv4_conv_blur_medium"])
def test_folding_exact_in_float64(name):
    ref, x = _subject(name)
    ref64 = copy.deepcopy(ref).double()
    fused = fuse(ref64, backend="reference", dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(fused(x.double()), ref64(x.double())) <= 1e-10


def test_reference_model_untouched():
    ref, x = _subject("mobilenetv4_hybrid_medium_075")
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    fuse(ref, backend="reference", dtype=torch.bfloat16)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("ref_built_in_inference_mode", [False, True])
def test_fuse_under_inference_mode(ref_built_in_inference_mode):
    """fuse() under torch.inference_mode gives the model fused outside it, with normal-tensor constants: the CPU
    ops cache each weight's packed form per tensor and version counter, which inference tensors lack, so a bf16
    model of inference-tensor weights would pack every weight on every call. The hybrid covers the MQA op."""
    name = "mobilenetv4_hybrid_medium_075"
    xc, x = _inputs()
    if ref_built_in_inference_mode:
        with torch.inference_mode():
            ref = randomized_model(name, num_classes=100, calibration_input=xc)
    else:
        ref, x = _subject(name)
    outside = fuse(ref, dtype=torch.bfloat16)
    with torch.inference_mode():
        inside = fuse(ref, dtype=torch.bfloat16)
        lp = x.to(torch.bfloat16)
        want = outside(lp)
        before = torch.ops.mnv4_cpu.packed_cache_entries()
        got = inside(lp)
        after_first = torch.ops.mnv4_cpu.packed_cache_entries()
        inside(lp)
        assert after_first > before  # its weights were packed into the cache ...
        assert torch.ops.mnv4_cpu.packed_cache_entries() == after_first  # ... once, not per call
    assert torch.equal(got, want)
    made_inside = [k for k, t in inside.state_dict().items() if t.is_inference()]
    assert not made_inside, made_inside


@pytest.mark.parametrize("name,res", [("mobilenetv4_conv_small", 224), ("mobilenetv4_hybrid_medium", 256)])
def test_golden_through_load(shared_dir, name, res):
    from safetensors.torch import load_file
    d = os.path.join(shared_dir, "golden", f"{name}_{res}")
    io = load_file(os.path.join(d, "io.safetensors"))
    model = load(name, os.path.join(d, "model.safetensors"), backend="reference")
    assert model.model_name == name and model.num_classes == 1000
    assert model.pretrained_cfg["input_size"][-1] in (224, 256)
    with torch.no_grad():
        feats = model.forward_features(io["input"])
        logits = model.forward_head(feats)
    assert rel_err(feats, io["features"]) <= 1e-5
    assert rel_err(logits, io["logits"]) <= 1e-5
    # auto picks whatever this machine has per op; still the golden logits
    auto = load(name, os.path.join(d, "model.safetensors"))
    with torch.no_grad():
        assert rel_err(auto(io["input"]), io["logits"]) <= 1e-5


@pytest.mark.parametrize("name", ["mobilenetv4_conv_small_050", "mobilenetv4_hybrid_medium_075",
                                  "mobilenetv4_conv_aa_medium", "mobilenetv4_hybrid_large_075"])
def test_bf16_within_twice_reference_bf16(name):
    ref, x = _subject(name)
    with torch.no_grad():
        want = ref(x)
        ref_bf16 = copy.deepcopy(ref).to(torch.bfloat16)(x.to(torch.bfloat16))
        fused = fuse(ref, backend="reference", dtype=torch.bfloat16)
        got = fused(x)
    assert got.dtype == torch.bfloat16 and fused.dtype == torch.bfloat16
    assert all(b.dtype == torch.bfloat16 for b in fused.buffers() if b.is_floating_point())
    e_ref = rel_err(ref_bf16, want)
    e_fused = rel_err(got, want)
    assert e_fused <= 2 * e_ref, (e_fused, e_ref)


def test_fp16_weights():
    ref, _ = _subject("mobilenetv4_conv_small_035")
    fused = fuse(ref, backend="reference", dtype=torch.float16)
    assert fused.dtype == torch.float16
    assert all(b.dtype == torch.float16 for b in fused.buffers() if b.is_floating_point())


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("name", ["mobilenetv4_conv_small_035", "mobilenetv4_hybrid_medium_075",
                                  "mobilenetv4_conv_blur_medium"])
def test_compile_and_export(name, backend):
    """The fused model (with backend="cpu": the mnv4 ops and the mnv4_cpu conv / pointwise ops through their
    fake kernels) under torch.compile(fullgraph=True) and torch.export."""
    ref, x = _subject(name)
    fused = fuse(ref, backend=backend)
    with torch.no_grad():
        want = fused(x)
        assert rel_err(want, ref(x)) <= 1e-5
        compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
        assert rel_err(compiled(x), want) <= 1e-6
        ep = torch.export.export(fused, (x,))
        assert rel_err(ep.module()(x), want) <= 1e-6
    if backend == "cpu":  # the CPU ops are in the graph, not decomposed or replaced
        targets = {str(n.target) for n in ep.graph.nodes}
        assert any("mnv4_cpu.conv" in t for t in targets) and any("mnv4.uib" in t for t in targets), targets


def test_backend_selection_auto_cpu():
    ref, x = _subject("mobilenetv4_hybrid_medium_075")
    cpu = backends()["cpu"]
    fused = fuse(ref)  # auto on CPU: cpu where it has the op, else reference
    for name, kind, be in fused.block_backends:
        if kind in ("uib", "mqa") and be != "composite":
            assert be == ("cpu" if cpu.available and kind in cpu.ops else "reference"), (name, kind, be)
    with torch.no_grad():
        assert rel_err(fused(x), ref(x)) <= 1e-5
    s = fused.summary()
    assert "mobilenetv4_hybrid_medium_075" in s and "blocks.2.4" in s and "mqa" in s


def test_backend_errors():
    ref, _ = _subject("mobilenetv4_conv_small_035")
    for name, b in backends().items():
        if not b.available:
            with pytest.raises(BackendError, match="unavailable") as e:
                fuse(ref, backend=name)
            assert b.reason in str(e.value)
    with pytest.raises(BackendError, match="unknown backend"):
        fuse(ref, backend="tpu")
    with pytest.raises(TypeError):
        fuse(torch.nn.Linear(2, 2))


def test_load_without_checkpoint_and_to():
    m = load("mobilenetv4_conv_small_035", num_classes=7, backend="reference")
    assert m.num_classes == 7 and m.pretrained_cfg["num_classes"] == 7
    assert m.model_name == "mobilenetv4_conv_small_035" and m.pretrained_cfg["input_size"] == (3, 224, 224)
    m = m.to("cpu")
    m.train()
    assert not m.training  # inference only
    with torch.no_grad():
        assert m(torch.randn(1, 3, 33, 47)).shape == (1, 7)
    assert mnv4_kernels.FusedMobileNetV4 is FusedMobileNetV4


def test_float64_runs_every_block_on_the_reference_backend():
    """float64: the kernels have none, so fuse() runs every block on the plain-torch reference (backend 'auto'
    or 'reference'), says so in summary(), and refuses an explicit kernel backend at fuse() time."""
    ref, x = _subject("mobilenetv4_hybrid_medium_075")
    ref64 = copy.deepcopy(ref).double()
    fused = fuse(ref, dtype=torch.float64)
    assert fused.dtype == torch.float64
    assert {b for _, k, b in fused.block_backends if k in ("uib", "mqa")} == {"reference"}
    assert "float64 runs on the reference backend" in fused.summary()
    with torch.no_grad():
        assert rel_err(fused(x.double()), ref64(x.double())) <= 1e-10
        assert fused(x).dtype == torch.float64  # a float32 image is cast to the model's dtype
    for b in ("cpu", "cuda", "triton"):
        with pytest.raises(ValueError, match=r"runs on the reference backend only.*torch\.float32, torch\.float16 "
                                             r"and torch\.bfloat16"):
            fuse(ref, backend=b, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"dtype must be torch\.float32, torch\.float16 or torch\.bfloat16 .*"
                                         r"torch\.float64 \(the reference backend\); got torch\.int8"):
        fuse(ref, dtype=torch.int8)
    assert "torch.float64 runs every block on the reference backend" in " ".join(fuse.__doc__.split())


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_forward_checks_x_in_user_terms(backend):
    """A wrong input gets an error naming x and the [N, 3, H, W] floating shape the model takes, not an internal
    op's weight (and an int8 image is not silently run)."""
    ref, x = _subject("mobilenetv4_conv_small_035")
    fused = fuse(ref, backend=backend)
    bad = {TypeError: [x.to(torch.int8), x.to(torch.uint8), x.to(torch.int64)],
           ValueError: [x[0], x[:, :2], torch.cat([x, x[:, :1]], 1), x[..., None]]}
    for err, xs in bad.items():
        for b in xs:
            for call in (fused, fused.forward_features):
                with pytest.raises(err, match=r"x must be a floating-point tensor \[N, 3, H, W\]") as e:
                    call(b)
                assert f"got {str(b.dtype).replace('torch.', '')} of shape {list(b.shape)}" in str(e.value)
                assert "mnv4" not in str(e.value)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        fused(x.numpy())
    with torch.no_grad():  # any float dtype goes in, cast to the model's
        assert rel_err(fused(x.double()), fused(x)) <= 1e-6


def test_summary_names_what_runs():
    ref, _ = _subject("mobilenetv4_hybrid_medium_075")
    cpu = backends()["cpu"]
    if cpu.available:
        s = fuse(ref, backend="cpu").summary()
        for op in ("mnv4_cpu::sequence", "mnv4_cpu::conv", "mnv4_cpu::pointwise", "mnv4::uib", "mnv4::mqa"):
            assert op in s, (op, s)
        assert "torch conv2d" not in s  # every conv runs on the CPU ops
        stem = fuse(ref, backend="cpu").steps[0]
        assert stem[:3] == ("stem", "stem", "cpu") and stem[3].startswith("mnv4_cpu::conv (3x3 s2")
    s = fuse(ref, backend="reference").summary()
    assert "mnv4_reference.functional.uib" in s and "mnv4_reference.functional.mqa" in s
    assert "torch conv2d 3x3 s2 + relu" in s and "mnv4_cpu" not in s and "sequence" not in s
