"""Helpers shared by the Triton ops. Their argument checks are mnv4_kernels.validate's (the one Python mirror of
csrc/params.h: the same rules and messages as the C++ ops and the fake kernels); `check` is re-exported for the
ops' own launch-time checks (device, dtype support)."""

from ..validate import check  # noqa: F401


# ---- running under TRITON_INTERPRET=1 ----
# There, torch.library.wrap_triton hands back the interpreted kernel itself instead of a traceable wrapper, so
# (a) the op's fake kernel (triton_op registers the Python body as one) would run the interpreter on
#     FakeTensors: `metadata_only` lets the body return its allocated output without launching, and
# (b) functionalization (AOTAutograd, torch.compile) cannot see the kernels: `keep_opaque_when_interpreted`
#     makes the op stay a single custom-op node there (as torch.export does anyway), which runs the
#     interpreted kernels on real tensors at run time. On a GPU neither applies: wrap_triton traces the kernels.

def metadata_only(x, interpret):
    """True when the body is running for shapes/strides only (fake or meta tensors) under the interpreter."""
    if not interpret:
        return False
    from torch._subclasses.fake_tensor import is_fake
    return x.device.type == "meta" or is_fake(x)


def keep_opaque_when_interpreted(op, interpret):
    if not interpret:
        return
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    def opaque(mode, func, types, args, kwargs):
        return mode.__torch_dispatch__(func, types, args, kwargs)

    op.register_torch_dispatch(FunctionalTensorMode, opaque)
