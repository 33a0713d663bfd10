"""Argument checks shared by the Triton ops: Python mirrors of csrc/params.h's detail:: helpers, with the same
rules and messages (each names the offending argument). They raise RuntimeError, as TORCH_CHECK does, so a
caller sees the same exception type from every backend."""

import torch

ACTIVATIONS = {"none": 0, "relu": 1, "gelu": 2}
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check(cond, msg):
    if not cond:
        raise RuntimeError(msg)


def conv_out(size, stride):
    return (size - 1) // stride + 1


def check_same(x, t, op, name):
    check(t.dtype == x.dtype,
          f"{op}: {name} has dtype {t.dtype} but x has dtype {x.dtype} (mixed dtypes are not supported)")
    check(t.device == x.device, f"{op}: {name} is on {t.device} but x is on {x.device}")


def check_input(x, op):
    check(isinstance(x, torch.Tensor), f"{op}: x must be a Tensor")
    check(x.dim() == 4, f"{op}: x must be 4-D [N, C, H, W]; got ndim {x.dim()} (shape {tuple(x.shape)})")
    check(x.dtype in _DTYPES, f"{op}: x must be float32, float16 or bfloat16; got {x.dtype}")
    check(x.shape[1] > 0 and x.shape[2] > 0 and x.shape[3] > 0,
          f"{op}: x must have at least one channel, row and column; got shape {tuple(x.shape)}")


def check_pointwise(x, w, op, name, out, cin):
    """A 1x1 conv weight [out, in, 1, 1] (or [out, in]); out < 0 accepts any output width."""
    check_same(x, w, op, name)
    ok = (w.dim() == 4 and w.shape[2] == 1 and w.shape[3] == 1) or w.dim() == 2
    check(ok, f"{op}: {name} must be a 1x1 conv weight [out, in, 1, 1]; got shape {tuple(w.shape)}")
    if out >= 0:
        check(w.shape[0] == out, f"{op}: {name} must have {out} output channels; got shape {tuple(w.shape)}")
    check(w.shape[1] == cin, f"{op}: {name} must have {cin} input channels; got shape {tuple(w.shape)}")


def check_bias(x, b, op, name, n):
    check_same(x, b, op, name)
    check(b.dim() == 1 and b.shape[0] == n, f"{op}: {name} must have shape [{n}]; got {tuple(b.shape)}")


def check_depthwise(x, w, b, op, wname, bname, channels):
    """A depthwise weight [C, 1, k, k] (k odd) and its bias [C], both or neither. Returns k (0 if absent)."""
    check((w is None) == (b is None),
          f"{op}: {wname} and {bname} must be given together (a depthwise conv carries its folded BatchNorm "
          "as a bias)")
    if w is None:
        return 0
    check_same(x, w, op, wname)
    check(w.dim() == 4 and w.shape[1] == 1,
          f"{op}: {wname} must be a depthwise weight [C, 1, k, k]; got shape {tuple(w.shape)}")
    check(w.shape[0] == channels, f"{op}: {wname} must have {channels} channels; got shape {tuple(w.shape)}")
    check(w.shape[2] == w.shape[3], f"{op}: {wname} must be square; got shape {tuple(w.shape)}")
    check(w.shape[2] % 2 == 1, f"{op}: {wname} must have an odd kernel size; got {w.shape[2]}")
    check_bias(x, b, op, bname, channels)
    return int(w.shape[2])


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
