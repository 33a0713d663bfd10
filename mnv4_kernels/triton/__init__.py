"""Triton kernels for the mnv4 ops (one file per op), registered with torch.library.triton_op.

Importing this package registers `torch.ops.mnv4.uib_triton` and `torch.ops.mnv4.mqa_triton` (same schemas
as `mnv4::uib` / `mnv4::mqa`, whose library mnv4_kernels._C declares). Python runs a module once per process,
so registration is idempotent; their autograd is that of the C++ ops (mnv4_kernels.ops.register_autograd).
Under TRITON_INTERPRET=1 (set before triton is imported) the kernels run on CPU tensors, for tests; otherwise
they need CUDA tensors.
"""

from ..ops import register_autograd
from .mqa import mqa_triton, validate_mqa
from .uib import uib_triton, validate_uib

register_autograd("mnv4::uib_triton", "uib")
register_autograd("mnv4::mqa_triton", "mqa")

__all__ = ["uib_triton", "mqa_triton", "validate_uib", "validate_mqa"]
