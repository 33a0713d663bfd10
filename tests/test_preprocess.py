"""Eval preprocessing (PIL + torch): per-model timm configs, resize / crop geometry, normalisation, modes."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from mnv4_reference import MODEL_NAMES, load_image, preprocess, pretrained_cfg
from mnv4_reference.preprocess import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD

EXPECTED = {  # name: (input size, crop_pct, mean family)
    "mobilenetv4_conv_small": (224, 0.875, "imagenet"),
    "mobilenetv4_conv_small_035": (224, 0.875, "inception"),
    "mobilenetv4_conv_small_050": (224, 0.875, "inception"),
    "mobilenetv4_conv_medium": (256, 0.95, "imagenet"),
    "mobilenetv4_conv_large": (384, 0.95, "imagenet"),
    "mobilenetv4_hybrid_medium": (256, 0.95, "imagenet"),
    "mobilenetv4_hybrid_medium_075": (224, 0.95, "imagenet"),
    "mobilenetv4_hybrid_large": (384, 0.95, "imagenet"),
    "mobilenetv4_hybrid_large_075": (256, 0.95, "imagenet"),
    "mobilenetv4_conv_aa_medium": (256, 0.95, "imagenet"),
    "mobilenetv4_conv_blur_medium": (224, 0.95, "imagenet"),
    "mobilenetv4_conv_aa_large": (448, 0.95, "imagenet"),
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_pretrained_cfg(name):
    size, crop, fam = EXPECTED[name]
    cfg = pretrained_cfg(name)
    assert cfg["input_size"] == (3, size, size) and cfg["crop_pct"] == crop
    assert cfg["interpolation"] == "bicubic" and cfg["num_classes"] == 1000
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if fam == "imagenet" else (INCEPTION_MEAN, INCEPTION_STD)
    assert cfg["mean"] == mean and cfg["std"] == std
    assert cfg["tag"].startswith(name + ".")
    cfg["crop_pct"] = 0.1  # a copy
    assert pretrained_cfg(name)["crop_pct"] == crop


def test_default_tags():
    assert pretrained_cfg("mobilenetv4_conv_small")["tag"] == "mobilenetv4_conv_small.e2400_r224_in1k"
    assert pretrained_cfg("mobilenetv4_hybrid_large")["tag"] == "mobilenetv4_hybrid_large.ix_e600_r384_in1k"
    assert pretrained_cfg("mobilenetv4_conv_aa_large")["tag"] == "mobilenetv4_conv_aa_large.e230_r448_in12k_ft_in1k"
    with pytest.raises(ValueError):
        pretrained_cfg("resnet50")


def _synthetic(w, h, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 7 + yy * 3) % 256, (xx * yy) % 256, rng.integers(0, 256, (h, w))], -1)
    return Image.fromarray(img.astype(np.uint8), "RGB")


def _by_hand(img, size, crop_pct, mean, std):
    """resize shorter side to floor(size / crop_pct) (bicubic), crop at round((w - size) / 2), normalise."""
    short = math.floor(size / crop_pct)
    w, h = img.size
    if w <= h:
        nw, nh = short, int(short * h / w)
    else:
        nw, nh = int(short * w / h), short
    r = np.asarray(img.convert("RGB").resize((nw, nh), Image.BICUBIC), dtype=np.float64) / 255.0
    left, top = round((nw - size) / 2), round((nh - size) / 2)
    r = r[top:top + size, left:left + size]
    r = (r - np.array(mean)) / np.array(std)
    return torch.from_numpy(r.transpose(2, 0, 1).copy()).float(), (nw, nh, left, top)


@pytest.mark.parametrize("w,h,size,crop", [(37, 23, 16, 0.875), (23, 37, 16, 0.875), (31, 20, 16, 0.95),
                                           (20, 20, 16, 1.0), (61, 29, 24, 0.9)])
def test_geometry_and_normalisation(w, h, size, crop):
    img = _synthetic(w, h)
    cfg = dict(input_size=(3, size, size), crop_pct=crop, mean=IMAGENET_MEAN, std=IMAGENET_STD,
               interpolation="bicubic")
    out = preprocess(img, cfg)
    want, geo = _by_hand(img, size, crop, IMAGENET_MEAN, IMAGENET_STD)
    assert out.shape == (1, 3, size, size) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], want, atol=1e-6, rtol=1e-6)


def test_crop_offset_rounding():
    # 37x23 at size 16 / 0.875: short side 18, long int(18*37/23) = 28, left = round(6.0) = 6, top = 1
    _, (nw, nh, left, top) = _by_hand(_synthetic(37, 23), 16, 0.875, IMAGENET_MEAN, IMAGENET_STD)
    assert (nw, nh, left, top) == (28, 18, 6, 1)
    # an odd margin rounds half to even as Python's round: 31x20 at 16 / 0.95 -> short 16, long 24 ... even;
    # 33x16 at 16 / 1.0: no resize, left = round(8.5) = 8
    img = _synthetic(33, 16)
    cfg = dict(input_size=16, crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    out = preprocess(img, cfg)
    ref = torch.from_numpy(np.asarray(img, dtype=np.float32)[:, 8:24].transpose(2, 0, 1) / 255.0)
    torch.testing.assert_close(out[0], ref)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
def test_modes(mode):
    base = _synthetic(30, 26, seed=1)
    img = base.convert(mode)
    out = preprocess([img, img], "mobilenetv4_conv_small_035")  # inception mean/std, 224
    assert out.shape == (2, 3, 224, 224)
    want, _ = _by_hand(img.convert("RGB"), 224, 0.875, INCEPTION_MEAN, INCEPTION_STD)
    torch.testing.assert_close(out[0], want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out[1], out[0])
    if mode == "L":
        assert torch.equal(out[0, 0], out[0, 1])


def test_named_cfg_size():
    out = preprocess(_synthetic(300, 280), "mobilenetv4_conv_medium")
    assert out.shape == (1, 3, 256, 256)
    assert preprocess([], "mobilenetv4_conv_medium").shape == (0, 3, 256, 256)


def test_load_image(tmp_path):
    p = tmp_path / "img.png"
    _synthetic(12, 10).convert("RGBA").save(p)
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (12, 10)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        load_image(bad)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(p.read_bytes()[:40])
    with pytest.raises(ValueError, match="trunc.png"):
        load_image(trunc)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "absent.png")
