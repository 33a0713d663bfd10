"""mnv4_kernels: fused MobileNetV4 kernels (UIB, Mobile MQA) as torch ops.

Importing the package loads the compiled library (which declares torch.ops.mnv4.*) and registers the
fake kernels used by torch.compile / torch.export and the autograd of the mnv4 ops.
"""

import torch  # noqa: F401  (the extension links against it)

from . import _C  # noqa: F401  registers the mnv4 library and its CPU (and CUDA) kernels
from . import ops
from .backends import backends
from .ops import mqa, uib

ops.register_python_kernels()

from .fuse import BackendError, fuse, load, resolve_backends, variant_of  # noqa: E402
from .model import FusedMobileNetV4  # noqa: E402

__all__ = ["uib", "mqa", "backends", "ops", "fuse", "load", "FusedMobileNetV4", "BackendError",
           "resolve_backends", "variant_of"]
