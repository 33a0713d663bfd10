"""Load timm MobileNetV4 checkpoint files into the reference model.

`load_checkpoint(name_or_model, path)` reads .safetensors (safetensors package) and .pth / .pt / .bin / .ckpt
(torch.load with weights_only=True: a pickle is never executed). It unwraps `state_dict` / `model` /
`state_dict_ema` nesting and a `module.` prefix, upcasts fp16 / bf16 weights to the model's dtype, accepts
`num_batches_tracked` present or absent, infers num_classes from `classifier.weight`, and reports every
missing, unexpected or wrong-shape key in one CheckpointError.
"""

import os
import pickle
import zipfile
from typing import Optional, Union

import torch
import torch.nn as nn

from .model import MobileNetV4, create_model

__all__ = ["CheckpointError", "load_checkpoint", "read_state_dict", "clean_state_dict"]

_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")
_SAFETENSORS_EXT = (".safetensors",)
_TORCH_EXT = (".pth", ".pt", ".bin", ".ckpt", ".tar")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or does not fit the model (lists every offending key)."""


def _read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or foreign?): {e}") from e


def _read_torch(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "weights_only" in msg:
            raise CheckpointError(
                f"{path}: refused: this file needs arbitrary unpickling (it references Python objects other "
                f"than tensors and plain containers), which could execute code; it was not loaded. Convert it "
                f"to .safetensors or re-save a plain state dict. torch said: {msg.splitlines()[0]}") from e
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unpickling failed: {msg.splitlines()[0]})") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or foreign?): {e}") from e


def _looks_like_safetensors(path):
    """safetensors: 8-byte little-endian header length, then a JSON header starting with '{'."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def read_state_dict(path) -> dict:
    """The raw object stored in a checkpoint file (safetensors by extension or content, else torch.load)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: empty file")
    ext = os.path.splitext(path)[1].lower()
    if ext in _SAFETENSORS_EXT or (ext not in _TORCH_EXT and _looks_like_safetensors(path)):
        return _read_safetensors(path)
    return _read_torch(path)


def clean_state_dict(obj, path="<checkpoint>", use_ema: bool = False) -> dict:
    """Unwrap nesting (state_dict / model / state_dict_ema), strip 'module.' prefixes, check it holds tensors."""
    order = ("state_dict_ema", "state_dict", "model") if use_ema else _WRAPPER_KEYS
    for _ in range(4):  # nested wrappers, e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, dict):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        for k in order:
            if isinstance(obj.get(k), dict):
                obj = obj[k]
                break
        else:
            break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: does not contain a state dict (found {type(obj).__name__}"
                              f"{' with keys ' + ', '.join(map(str, list(obj)[:8])) if isinstance(obj, dict) else ''})")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{path}: state dict key {k!r} is not a string")
        if not isinstance(v, torch.Tensor):
            if isinstance(v, (int, float)) and k.endswith("num_batches_tracked"):
                v = torch.tensor(v, dtype=torch.int64)
            else:
                continue  # metadata beside the weights (epoch, arch, ...)
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    if not out:
        raise CheckpointError(f"{path}: no tensors found (keys: {', '.join(map(str, list(obj)[:8]))})")
    return out


def _fmt(keys, limit=50):
    keys = list(keys)
    s = ", ".join(keys[:limit])
    return s + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_checkpoint(name_or_model: Union[str, nn.Module], path, num_classes: Optional[int] = None,
                    strict: bool = True, use_ema: bool = False) -> MobileNetV4:
    """Load a timm checkpoint file into a reference model and return it in eval mode.

    name_or_model: a model name (the model is created with num_classes, or with the classifier size the
    checkpoint holds when num_classes is None) or a model instance (its num_classes must match the file).
    strict: missing and unexpected keys are errors (wrong shapes always are); non-strict loads what fits.
    Raises CheckpointError (a ValueError) listing every missing / unexpected / wrong-shape key at once, or
    naming the path when the file is truncated, foreign or would need arbitrary unpickling.
    """
    path = os.fspath(path)
    sd = clean_state_dict(read_state_dict(path), path, use_ema=use_ema)
    ckpt_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else None

    if isinstance(name_or_model, str):
        if num_classes is None:
            num_classes = ckpt_classes if ckpt_classes is not None else 1000
        model = create_model(name_or_model, num_classes=num_classes)
    elif isinstance(name_or_model, nn.Module):
        model = name_or_model
        have = getattr(model, "num_classes", None)
        if num_classes is not None and have is not None and num_classes != have:
            raise CheckpointError(f"num_classes={num_classes} was asked for but the given model has {have} classes")
        if ckpt_classes is not None and have is not None and ckpt_classes != have:
            raise CheckpointError(
                f"{path}: the checkpoint's classifier has {ckpt_classes} classes but the given model has {have}; "
                f"create the model with num_classes={ckpt_classes} (or pass the model name)")
    else:
        raise TypeError(f"name_or_model must be a model name or an nn.Module; got {type(name_or_model).__name__}")

    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} (file {tuple(sd[k].shape)}, model {tuple(expected[k].shape)})"
             for k in sd if k in expected and sd[k].shape != expected[k].shape]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape: {_fmt(wrong)}")
    if strict and missing:
        problems.append(f"{len(missing)} missing: {_fmt(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_fmt(unexpected)}")
    if problems:
        name = getattr(model, "model_name", type(model).__name__)
        raise CheckpointError(f"{path} does not fit {name}: " + "; ".join(problems))

    bad_dtype = [k for k, v in sd.items() if k in expected and expected[k].is_floating_point() != v.is_floating_point()]
    if bad_dtype:
        raise CheckpointError(f"{path}: keys with a non-float dtype where the model has floats (or back): "
                              f"{_fmt(bad_dtype)}")
    fixed = {}
    for k, v in sd.items():
        if k not in expected:
            continue
        ref = expected[k]
        fixed[k] = v.to(dtype=ref.dtype, device=ref.device)  # fp16 / bf16 -> fp32 upcast (and back to ints)
    model.load_state_dict(fixed, strict=False)
    return model.eval()
