"""Which backends exist on this machine, and why the others do not."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Backend:
    name: str
    available: bool
    reason: str  # why it is unavailable ("" when available)
    ops: tuple = ()  # the fused ops this backend implements here

    def __str__(self):
        state = "available" if self.available else f"unavailable: {self.reason}"
        ops = f" [{', '.join(self.ops)}]" if self.ops else ""
        return f"{self.name:10s}{state}{ops}"


def _has_kernel(op, key):
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(op, key)
    except RuntimeError:  # op not declared
        return False


def _ops_with(key, names=("uib", "mqa")):
    return tuple(n for n in names if _has_kernel(f"mnv4::{n}", key))


def _cpu():
    ops = _ops_with("CPU")
    if not ops:
        return Backend("cpu", False, "mnv4_kernels._C has no CPU kernels registered")
    return Backend("cpu", True, "", ops)


def _cuda():
    if torch.version.cuda is None:
        return Backend("cuda", False, f"torch {torch.__version__} is a CPU-only build; the CUDA kernels were not built")
    ops = _ops_with("CUDA")
    if not ops:
        return Backend("cuda", False, "mnv4_kernels._C was built without the CUDA kernels (nvcc not found at build time?)")
    if not torch.cuda.is_available():
        return Backend("cuda", False, "no CUDA device is visible", ops)
    return Backend("cuda", True, "", ops)


def _triton():
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return Backend("triton", False, f"triton is not importable ({e})")
    if not torch.cuda.is_available():
        return Backend("triton", False, "no CUDA device (Triton runs here only under TRITON_INTERPRET=1, for tests)")
    return Backend("triton", True, "", ("uib", "mqa"))


def backends():
    """A dict name -> Backend for cpu, cuda, triton and reference, each with the reason it is unavailable."""
    found = [_cpu(), _cuda(), _triton(), Backend("reference", True, "", ("uib", "mqa"))]
    return {b.name: b for b in found}
