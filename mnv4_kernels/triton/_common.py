"""Argument checks shared by the Triton ops: csrc/params.h's detail:: helpers, through their one Python mirror
(mnv4_kernels.validate), with the same rules and messages (each names the offending argument). They raise
RuntimeError, as TORCH_CHECK does, so a caller sees the same exception type from every backend."""

from .. import validate as _v

ACTIVATIONS = _v.ACTIVATIONS


def check(cond, msg):
    _v.check(cond, msg)


def conv_out(size, stride):
    return _v.conv_out(size, stride)


def check_same(x, t, op, name):
    _v.check_same(x, t, op, name)


def check_input(x, op):
    _v.check_input(x, op)


def check_pointwise(x, w, op, name, out, cin):
    """A 1x1 conv weight [out, in, 1, 1] (or [out, in]); out < 0 accepts any output width."""
    _v.check_pointwise(x, w, op, name, out, cin)


def check_bias(x, b, op, name, n):
    _v.check_bias(x, b, op, name, n)


def check_depthwise(x, w, b, op, wname, bname, channels):
    """A depthwise weight [C, 1, k, k] (k odd) and its bias [C], both or neither. Returns k (0 if absent)."""
    return _v.check_depthwise(x, w, b, op, wname, bname, channels)


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
