"""The pure-PyTorch reference: timm's state-dict keys for all twelve models, golden outputs, odd input sizes."""

import os

import pytest
import torch
from safetensors.torch import load_file

from mnv4_reference import MODEL_NAMES, create_model
from mnv4_reference.model import BlurPool2d, decode_block, make_divisible
from mnv4_reference.testing import rel_err

GOLDEN = [("mobilenetv4_conv_small", 224), ("mobilenetv4_hybrid_medium", 256)]


def _timm_keys(shared_dir, name):
    path = os.path.join(shared_dir, "spec", "timm_keys", f"timm_keys_{name}.txt")
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            k, shape, dtype = line.rstrip("\n").split("\t")
            rows.append((k, shape, dtype))
    return rows


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_state_dict_matches_timm(shared_dir, name):
    model = create_model(name)
    got = [(k, str(tuple(v.shape)), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]
    want = _timm_keys(shared_dir, name)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"missing {missing[:10]} extra {extra[:10]}"
    assert got == want  # same order too


def _load_golden(shared_dir, name, res):
    d = os.path.join(shared_dir, "golden", f"{name}_{res}")
    sd = load_file(os.path.join(d, "model.safetensors"))
    io = load_file(os.path.join(d, "io.safetensors"))
    return sd, io


@pytest.mark.parametrize("name,res", GOLDEN)
def test_golden(shared_dir, name, res):
    sd, io = _load_golden(shared_dir, name, res)
    model = create_model(name)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(io["input"])
        logits = model.forward_head(feats)
    assert feats.shape == io["features"].shape
    assert rel_err(feats, io["features"]) <= 1e-5
    assert rel_err(logits, io["logits"]) <= 1e-5
    assert rel_err(model(io["input"]), io["logits"]) <= 1e-5


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_odd_input_size(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 97, 131))
        out = model.forward_head(feats)
    if model.aa_layer == "avg":  # AvgPool2d(2, 2) floors where a stride-2 conv ceils
        assert feats.shape[1:] == (model.num_features, 3, 4)
    else:
        assert feats.shape[1:] == (model.num_features, 4, 5)
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_widths_and_config():
    assert create_model("mobilenetv4_conv_small_050").num_features == 480
    assert create_model("mobilenetv4_conv_small_035").num_features == 336
    assert create_model("mobilenetv4_hybrid_large_075").num_features == 720
    m = create_model("mobilenetv4_hybrid_large")
    assert m.act == "gelu" and m.conv_stem.out_channels == 24
    assert create_model("mobilenetv4_hybrid_medium").act == "relu"
    assert make_divisible(36) == 40 and make_divisible(48 * 0.35) == 16 and make_divisible(960 * 0.35) == 336
    b = decode_block("mqa_r1_k3_h4_s1_v2_d64_c160")
    assert (b.kind, b.num_heads, b.key_dim, b.kv_stride, b.out_chs) == ("mqa", 4, 64, 2, 160)
    b = decode_block("uir_r2_a3_k0_s1_e4.5_c256")
    assert (b.repeat, b.start_kernel, b.kernel, b.exp_ratio) == (2, 3, 0, 4.5)
    with pytest.raises(ValueError):
        create_model("mobilenetv4_conv_tiny")
    with pytest.raises(ValueError):
        decode_block("ir_r1_k3_s1_e4_c16")


def test_block_semantics_hybrid():
    m = create_model("mobilenetv4_hybrid_medium")
    blocks = dict(m.named_blocks())
    b = blocks["blocks.2.4"]
    assert b.kind == "mqa" and b.attn.kv_stride == 2 and b.attn.num_heads == 4 and b.attn.key_dim == 64
    assert blocks["blocks.3.8"].attn.kv_stride == 1 and blocks["blocks.3.8"].attn.key.down_conv is None
    assert blocks["blocks.1.0"].dw_mid.conv.stride == (2, 2) and blocks["blocks.1.0"].dw_start.conv.stride == (1, 1)
    assert not blocks["blocks.1.0"].has_skip and blocks["blocks.1.1"].has_skip


def test_anti_aliased_variants():
    aa = create_model("mobilenetv4_conv_aa_medium")
    blur = create_model("mobilenetv4_conv_blur_medium").eval()
    for m, cls in ((aa, torch.nn.AvgPool2d), (blur, BlurPool2d)):
        blocks = dict(m.named_blocks())
        assert blocks["blocks.0.0"].conv_exp.stride == (1, 1) and isinstance(blocks["blocks.0.0"].aa, cls)
        for name in ("blocks.1.0", "blocks.2.0", "blocks.3.0"):
            assert blocks[name].dw_mid.conv.stride == (1, 1) and isinstance(blocks[name].dw_mid.aa, cls)
        assert m.conv_stem.stride == (2, 2)
    filt = dict(blur.named_blocks())["blocks.1.0"].dw_mid.aa.filt
    assert "filt" not in "".join(blur.state_dict())  # non-persistent
    k = torch.tensor([1.0, 2.0, 1.0])
    torch.testing.assert_close(filt[0, 0], torch.outer(k, k) / 16)
    # the blur pool is zero padded, stride 2: ceil(H/2)
    assert blur(torch.randn(1, 3, 65, 63)).shape == (1, 1000)
