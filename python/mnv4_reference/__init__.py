"""Pure-PyTorch MobileNetV4 reference (timm-compatible state dicts). Imports nothing from mnv4_kernels."""

from . import functional  # noqa: F401
from .loader import CheckpointError, load_checkpoint  # noqa: F401
from .model import MODEL_NAMES, MobileNetV4, create_model, make_divisible  # noqa: F401
from .preprocess import load_image, preprocess, pretrained_cfg  # noqa: F401
from .randomize import randomize_, randomized_model  # noqa: F401

__all__ = ["functional", "MODEL_NAMES", "MobileNetV4", "create_model", "make_divisible", "CheckpointError",
           "load_checkpoint", "pretrained_cfg", "preprocess", "load_image", "randomize_", "randomized_model"]
