"""Pure-PyTorch MobileNetV4 reference (timm-compatible state dicts). Imports nothing from mnv4_kernels."""

from . import functional  # noqa: F401
from .model import MODEL_NAMES, MobileNetV4, create_model, make_divisible  # noqa: F401

__all__ = ["functional", "MODEL_NAMES", "MobileNetV4", "create_model", "make_divisible"]
