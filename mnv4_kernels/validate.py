"""Argument checks of the mnv4 and mnv4_cpu ops in Python: the mirror of csrc/params.h (make_uib_params,
make_mqa_params and their detail:: helpers) and of the checks at the top of csrc/cpu/conv.cpp and
csrc/cpu/pointwise.cpp, rule for rule and message for message.

Used by the fake kernels (mnv4_kernels.ops: torch.compile / torch.export / FakeTensorMode reject what the
compiled kernels reject, naming the same argument) and by the Triton ops (mnv4_kernels.triton). Every failure
raises RuntimeError, as TORCH_CHECK does, so a caller sees one exception type from every backend. Conditions go
through torch._check, so symbolic sizes (dynamic shapes) are checked without specialising where torch can
avoid it; messages are built only when a check fails.

Each `uib` / `mqa` / `conv` / `pointwise` returns the sizes the kernel derives from its arguments (the Python
counterpart of UibParams / MqaParams).
"""

import torch

__all__ = ["ACTIVATIONS", "DTYPES", "check", "conv_out", "parse_activation", "check_same", "check_input",
           "check_pointwise", "check_bias", "check_depthwise", "uib", "mqa", "conv", "pointwise"]

ACTIVATIONS = {"none": 0, "relu": 1, "gelu": 2}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check(cond, msg):
    """Raise RuntimeError(msg) unless cond; msg is a string or a callable returning one (built on failure)."""
    if not isinstance(cond, torch.SymBool):
        cond = bool(cond)
    torch._check(cond, msg if callable(msg) else lambda: msg)


def conv_out(size, stride):
    """Output size of a k x k conv with padding k // 2 (k odd) and the given stride."""
    return (size - 1) // stride + 1


def _dtype(t):
    """A dtype as c10 prints it in TORCH_CHECK messages (Float, Half, BFloat16, Int, ...)."""
    try:
        return torch.empty(0, dtype=t.dtype, device="cpu").type().replace("torch.", "").replace("Tensor", "")
    except Exception:  # a dtype without a CPU tensor type
        return str(t.dtype).replace("torch.", "")


def _shape(t):
    return list(t.shape)


def parse_activation(name, op, arg="activation"):
    check(isinstance(name, str) and name in ACTIVATIONS,
          lambda: f'{op}: {arg} must be one of "relu", "gelu", "none"; got "{name}"')
    return ACTIVATIONS[name]


def check_same(x, t, op, name):
    check(t.dtype == x.dtype, lambda: f"{op}: {name} has dtype {_dtype(t)} but x has dtype {_dtype(x)} "
                                      "(mixed dtypes are not supported)")
    check(t.device == x.device, lambda: f"{op}: {name} is on {t.device} but x is on {x.device}")


def check_input(x, op):
    check(isinstance(x, torch.Tensor), lambda: f"{op}: x must be a Tensor; got {type(x).__name__}")
    check(x.dim() == 4, lambda: f"{op}: x must be 4-D [N, C, H, W]; got ndim {x.dim()} (shape {_shape(x)})")
    check(x.dtype in DTYPES, lambda: f"{op}: x must be float32, float16 or bfloat16; got {_dtype(x)}")
    check(x.shape[1] > 0 and x.shape[2] > 0 and x.shape[3] > 0,
          lambda: f"{op}: x must have at least one channel, row and column; got shape {_shape(x)}")


def _tensor(t, op, name):
    check(isinstance(t, torch.Tensor), lambda: f"{op}: {name} must be a Tensor; got {type(t).__name__}")


def check_pointwise(x, w, op, name, out, cin):
    """A 1x1 conv weight [out, in, 1, 1] (or [out, in]); out < 0 accepts any output width."""
    _tensor(w, op, name)
    check_same(x, w, op, name)
    ok = (w.dim() == 4 and w.shape[2] == 1 and w.shape[3] == 1) or w.dim() == 2
    check(ok, lambda: f"{op}: {name} must be a 1x1 conv weight [out, in, 1, 1]; got shape {_shape(w)}")
    if out >= 0:
        check(w.shape[0] == out, lambda: f"{op}: {name} must have {out} output channels; got shape {_shape(w)}")
    check(w.shape[1] == cin, lambda: f"{op}: {name} must have {cin} input channels; got shape {_shape(w)}")


def check_bias(x, b, op, name, n):
    _tensor(b, op, name)
    check_same(x, b, op, name)
    check(b.dim() == 1 and b.shape[0] == n, lambda: f"{op}: {name} must have shape [{n}]; got {_shape(b)}")


def check_depthwise(x, w, b, op, wname, bname, channels):
    """A depthwise weight [C, 1, k, k] (k odd) and its bias [C], both or neither. Returns k (0 if absent)."""
    check((w is None) == (b is None),
          lambda: f"{op}: {wname} and {bname} must be given together (a depthwise conv carries its folded "
                  "BatchNorm as a bias)")
    if w is None:
        return 0
    _tensor(w, op, wname)
    check_same(x, w, op, wname)
    check(w.dim() == 4 and w.shape[1] == 1,
          lambda: f"{op}: {wname} must be a depthwise weight [C, 1, k, k]; got shape {_shape(w)}")
    check(w.shape[0] == channels, lambda: f"{op}: {wname} must have {channels} channels; got shape {_shape(w)}")
    check(w.shape[2] == w.shape[3], lambda: f"{op}: {wname} must be square; got shape {_shape(w)}")
    check(w.shape[2] % 2 == 1, lambda: f"{op}: {wname} must have an odd kernel size; got {w.shape[2]}")
    check_bias(x, b, op, bname, channels)
    return int(w.shape[2])


def uib(x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w, proj_b, stride=1,
        residual=False, activation="relu"):
    """mnv4::make_uib_params. Returns batch, cin, h, w, mid, cout, ks / km (start / mid dw kernel, 0 = none),
    s_start / s_mid (their strides), oh, ow (output), eh, ew (the expanded grid), act (activation code)."""
    op = "mnv4::uib"
    check_input(x, op)
    n, cin, h, w = x.shape
    act = parse_activation(activation, op)
    check(stride in (1, 2), lambda: f"{op}: stride must be 1 or 2; got {stride}")
    ks = check_depthwise(x, start_dw_w, start_dw_b, op, "start_dw_w", "start_dw_b", cin)
    check_pointwise(x, expand_w, op, "expand_w", -1, cin)
    mid = expand_w.shape[0]
    check(mid > 0, lambda: f"{op}: expand_w must have at least one output channel")
    check_bias(x, expand_b, op, "expand_b", mid)
    km = check_depthwise(x, mid_dw_w, mid_dw_b, op, "mid_dw_w", "mid_dw_b", mid)
    check_pointwise(x, proj_w, op, "proj_w", -1, mid)
    cout = proj_w.shape[0]
    check(cout > 0, lambda: f"{op}: proj_w must have at least one output channel")
    check_bias(x, proj_b, op, "proj_b", cout)
    s_mid = stride if km else 1
    s_start = stride if (ks and not km) else 1
    check(stride == 1 or km or ks,
          lambda: f"{op}: stride=2 needs a depthwise conv to carry it (start_dw_w or mid_dw_w); the FFN form has "
                  "none")
    check(not residual or stride == 1, lambda: f"{op}: residual=True needs stride=1; got stride={stride}")
    check(not residual or cin == cout, lambda: f"{op}: residual=True needs Cin == Cout; got Cin={cin}, Cout={cout}")
    return dict(batch=n, cin=cin, h=h, w=w, mid=mid, cout=cout, ks=ks, km=km, s_mid=s_mid, s_start=s_start,
                oh=conv_out(h, stride), ow=conv_out(w, stride), eh=conv_out(h, s_start), ew=conv_out(w, s_start),
                act=act)


def mqa(x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w, num_heads, kv_stride=1,
        residual=True):
    """mnv4::make_mqa_params. Returns batch, c, h, w, heads, dk, dv, cout, kk (K/V dw kernel, 0 = none),
    kvh, kvw (the K/V grid)."""
    op = "mnv4::mqa"
    check_input(x, op)
    n, c, h, w = x.shape
    check_bias(x, norm_scale, op, "norm_scale", c)
    check_bias(x, norm_shift, op, "norm_shift", c)
    check(num_heads >= 1, lambda: f"{op}: num_heads must be >= 1; got {num_heads}")
    check_pointwise(x, q_w, op, "q_w", -1, c)
    check(q_w.shape[0] % num_heads == 0 and q_w.shape[0] > 0,
          lambda: f"{op}: num_heads={num_heads} must divide the query width q_w.size(0)={q_w.shape[0]}")
    dk = q_w.shape[0] // num_heads
    check_pointwise(x, k_w, op, "k_w", dk, c)
    check_pointwise(x, v_w, op, "v_w", -1, c)
    dv = v_w.shape[0]
    check(dv > 0, lambda: f"{op}: v_w must have at least one output channel")
    check_pointwise(x, o_w, op, "o_w", -1, num_heads * dv)
    cout = o_w.shape[0]
    check(kv_stride in (1, 2), lambda: f"{op}: kv_stride must be 1 or 2; got {kv_stride}")
    kk = check_depthwise(x, k_dw_w, k_dw_b, op, "k_dw_w", "k_dw_b", c)
    kv = check_depthwise(x, v_dw_w, v_dw_b, op, "v_dw_w", "v_dw_b", c)
    check(kk == kv, lambda: f"{op}: k_dw_w and v_dw_w must both be given with the same kernel size, or both omitted")
    check(kv_stride == 1 or kk > 0, lambda: f"{op}: kv_stride=2 needs the K/V depthwise weights (k_dw_w, v_dw_w)")
    check(not residual or cout == c,
          lambda: f"{op}: residual=True needs o_w to have {c} output channels (C of x); got {cout}")
    return dict(batch=n, c=c, h=h, w=w, heads=num_heads, dk=dk, dv=dv, cout=cout, kk=kk,
                kvh=conv_out(h, kv_stride), kvw=conv_out(w, kv_stride))


def conv(x, weight, bias=None, stride=1, activation="none", proj_weight=None, proj_bias=None, residual=False,
         channels_last=False, proj_activation="none"):
    """mnv4_cpu::conv (csrc/cpu/conv.cpp). Returns batch, out (channels of the result), oh, ow."""
    op = "mnv4_cpu::conv"
    check_input(x, op)
    n, c, h, w = x.shape
    _tensor(weight, op, "weight")
    check_same(x, weight, op, "weight")
    check(weight.dim() == 4 and weight.shape[1] == c,
          lambda: f"{op}: weight must be [out, {c}, k, k] (x has {c} channels); got shape {_shape(weight)}")
    check(weight.shape[2] == weight.shape[3] and weight.shape[2] % 2 == 1,
          lambda: f"{op}: weight must have a square, odd kernel; got shape {_shape(weight)}")
    check(weight.shape[0] > 0, lambda: f"{op}: weight must have at least one output channel; got shape "
                                       f"{_shape(weight)}")
    o = weight.shape[0]
    if bias is not None:
        check_bias(x, bias, op, "bias", o)
    check(stride in (1, 2), lambda: f"{op}: stride must be 1 or 2; got {stride}")
    parse_activation(activation, op)
    check(proj_weight is not None or proj_bias is None, lambda: f"{op}: proj_bias given without proj_weight")
    parse_activation(proj_activation, op, "proj_activation")
    check(proj_weight is not None or proj_activation == "none",
          lambda: f"{op}: proj_activation '{proj_activation}' given without proj_weight")
    p = o
    if proj_weight is not None:
        check_pointwise(x, proj_weight, op, "proj_weight", -1, o)
        p = proj_weight.shape[0]
        check(p > 0, lambda: f"{op}: proj_weight must have at least one output channel")
        if proj_bias is not None:
            check_bias(x, proj_bias, op, "proj_bias", p)
    if residual:
        check(stride == 1 and p == c,
              lambda: f"{op}: residual needs stride 1 and as many output channels as x has ({c}); got stride "
                      f"{stride} and {p} output channels")
    return dict(batch=n, out=p, oh=conv_out(h, stride), ow=conv_out(w, stride))


def mean(x):
    """mnv4_cpu::mean (csrc/cpu/pool.cpp): x [N, C, H, W]. Returns (N, C)."""
    op = "mnv4_cpu::mean"
    check(isinstance(x, torch.Tensor), lambda: f"{op}: x must be a Tensor; got {type(x).__name__}")
    check(x.dim() == 4, lambda: f"{op}: x must be 4-D [N, C, H, W]; got ndim {x.dim()}")
    check(x.dtype in DTYPES, lambda: f"{op}: x must be float32, float16 or bfloat16; got {_dtype(x)}")
    return tuple(x.shape[:2])


def pointwise(x, weight, bias=None, activation="none"):
    """mnv4_cpu::pointwise (csrc/cpu/pointwise.cpp): x [N, C] or [N, C, H, W]. Returns out (channels)."""
    op = "mnv4_cpu::pointwise"
    check(isinstance(x, torch.Tensor), lambda: f"{op}: x must be a Tensor; got {type(x).__name__}")
    check(x.dim() in (2, 4), lambda: f"{op}: x must be 2-D [N, C] or 4-D [N, C, H, W]; got ndim {x.dim()}")
    check(x.dtype in DTYPES, lambda: f"{op}: x must be float32, float16 or bfloat16; got {_dtype(x)}")
    check_pointwise(x, weight, op, "weight", -1, x.shape[1])
    o = weight.shape[0]
    if bias is not None:
        check_bias(x, bias, op, "bias", o)
    parse_activation(activation, op)
    return dict(out=o)
