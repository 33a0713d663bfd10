"""Pure-PyTorch MobileNetV4 reference (timm-compatible state dicts). Imports nothing from mnv4_kernels."""

from . import functional  # noqa: F401
