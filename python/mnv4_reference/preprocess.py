"""timm's eval preprocessing for MobileNetV4, with PIL and torch only (no torchvision).

resize the shorter side to floor(size / crop_pct) (PIL bicubic, aspect kept; the longer side
int(new_short * long / short) as torchvision computes it) -> center crop size x size (offsets
round((w - size) / 2), round((h - size) / 2), Python rounding as torchvision) -> [0, 1] -> (x - mean) / std.
Per-model settings are timm's default pretrained tags (spec section 5), from `pretrained_cfg(name)`.

This is the plain transform: the whole file decoded, every step on a PIL image, one float conversion at the
end. It is the oracle for the fast pipeline in mnv4_kernels.pipeline.
"""

import math
import os
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .model import MODEL_NAMES

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD", "PRETRAINED_CFGS",
           "pretrained_cfg", "preprocess", "load_image", "resize_shorter", "center_crop", "eval_geometry"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

# model -> (default timm tag, input size, crop_pct, mean/std family, test input size, test crop_pct)
_CFGS = {
    "mobilenetv4_conv_small": ("e2400_r224_in1k", 224, 0.875, "imagenet", 256, 0.95),
    "mobilenetv4_conv_small_035": ("untrained", 224, 0.875, "inception", 256, 0.95),
    "mobilenetv4_conv_small_050": ("e3000_r224_in1k", 224, 0.875, "inception", 256, 0.95),
    "mobilenetv4_conv_medium": ("e500_r256_in1k", 256, 0.95, "imagenet", 320, 1.0),
    "mobilenetv4_conv_large": ("e600_r384_in1k", 384, 0.95, "imagenet", 448, 1.0),
    "mobilenetv4_hybrid_medium": ("e200_r256_in12k_ft_in1k", 256, 0.95, "imagenet", 320, 1.0),
    "mobilenetv4_hybrid_medium_075": ("untrained", 224, 0.95, "imagenet", None, None),
    "mobilenetv4_hybrid_large": ("ix_e600_r384_in1k", 384, 0.95, "imagenet", 448, 1.0),
    "mobilenetv4_hybrid_large_075": ("untrained", 256, 0.95, "imagenet", None, None),
    "mobilenetv4_conv_aa_medium": ("untrained", 256, 0.95, "imagenet", None, None),
    "mobilenetv4_conv_blur_medium": ("e500_r224_in1k", 224, 0.95, "imagenet", 256, 1.0),
    "mobilenetv4_conv_aa_large": ("e230_r448_in12k_ft_in1k", 448, 0.95, "imagenet", 544, 1.0),
}
assert set(_CFGS) == set(MODEL_NAMES)


def _make_cfg(name):
    tag, size, crop_pct, family, test_size, test_crop = _CFGS[name]
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if family == "imagenet" else (INCEPTION_MEAN, INCEPTION_STD)
    cfg = dict(tag=f"{name}.{tag}", input_size=(3, size, size), crop_pct=crop_pct, mean=mean, std=std,
               interpolation="bicubic", num_classes=1000, pool_size=(math.ceil(size / 32), math.ceil(size / 32)))
    if test_size is not None:
        cfg.update(test_input_size=(3, test_size, test_size), test_crop_pct=test_crop)
    return cfg


PRETRAINED_CFGS = {n: _make_cfg(n) for n in MODEL_NAMES}


def pretrained_cfg(name: str) -> dict:
    """timm's default pretrained config for a model: input_size (3, S, S), crop_pct, mean, std,
    interpolation ('bicubic'), num_classes, tag, pool_size and, where timm has one, test_input_size and
    test_crop_pct. A fresh copy each call."""
    if name not in PRETRAINED_CFGS:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(MODEL_NAMES)}")
    return dict(PRETRAINED_CFGS[name])


def load_image(path) -> Image.Image:
    """Open an image file as RGB, as it is displayed: an EXIF orientation tag is applied (as
    PIL.ImageOps.exif_transpose; timm's folder reader ignores the tag, which matters only for files that carry
    one, such as phone photos taken upright). FileNotFoundError if absent; ValueError naming the path if
    unreadable."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def eval_geometry(w: int, h: int, size: int, crop_pct: float):
    """The eval transform's geometry for a w x h image: (resized w, resized h, crop left, crop top).
    The shorter side becomes floor(size / crop_pct), the longer int(short * long / short_side); the
    size x size crop sits at round((new - size) / 2) (Python rounding, as torchvision)."""
    short = math.floor(size / crop_pct)
    if w <= h:
        new_w, new_h = short, int(short * h / w)
    else:
        new_w, new_h = int(short * w / h), short
    return new_w, new_h, int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))


def resize_shorter(img: Image.Image, short: int) -> Image.Image:
    """Resize so the shorter side is `short` (bicubic), the longer int(short * long / short_side)."""
    w, h = img.size
    new_w, new_h, _, _ = eval_geometry(w, h, short, 1.0)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.BICUBIC)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if w < size or h < size:
        raise ValueError(f"image {w}x{h} is smaller than the crop {size}")
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _cfg_of(name_or_cfg):
    if isinstance(name_or_cfg, str):
        return pretrained_cfg(name_or_cfg)
    if isinstance(name_or_cfg, dict):
        return name_or_cfg
    cfg = getattr(name_or_cfg, "pretrained_cfg", None)  # a model carrying its cfg
    if isinstance(cfg, dict):
        return cfg
    raise TypeError(f"expected a model name or a cfg dict; got {type(name_or_cfg).__name__}")


def preprocess(images: Union[Image.Image, Sequence[Image.Image]], name_or_cfg, size: int = None,
               crop_pct: float = None) -> torch.Tensor:
    """PIL image(s) (any mode; converted to RGB) -> float32 [N, 3, S, S], timm's eval transform.

    name_or_cfg: a model name or a dict with input_size (int or (3, S, S)), crop_pct, mean, std.
    size / crop_pct override the cfg (e.g. the test resolution)."""
    cfg = _cfg_of(name_or_cfg)
    s = size if size is not None else cfg["input_size"]
    s = int(s[-1]) if isinstance(s, (tuple, list)) else int(s)
    cp = float(crop_pct if crop_pct is not None else cfg.get("crop_pct", 0.875))
    interp = cfg.get("interpolation", "bicubic")
    if interp != "bicubic":
        raise ValueError(f"only bicubic interpolation is implemented; cfg asks for {interp!r}")
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(3, 1, 1)
    if isinstance(images, Image.Image):
        images = [images]
    out = []
    for img in images:
        if not isinstance(img, Image.Image):
            raise TypeError(f"expected PIL images; got {type(img).__name__}")
        img = img.convert("RGB") if img.mode != "RGB" else img
        img = center_crop(resize_shorter(img, math.floor(s / cp)), s)
        t = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
        out.append((t - mean) / std)
    if not out:
        return torch.empty(0, 3, s, s)
    return torch.stack(out)
