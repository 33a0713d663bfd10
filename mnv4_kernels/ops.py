"""Typed Python wrappers and fake (meta) kernels for the mnv4 ops.

The schemas live in csrc/ops.cpp; the kernels in csrc/cpu, csrc/cuda and mnv4_kernels/triton. The fake
kernels here give torch.compile / torch.export the output's shape *and strides* without running anything:
the output layout follows the input (see `_output_memory_format`, mirrored in csrc/params.h).
"""

from typing import Optional

import torch
from torch import Tensor

__all__ = ["uib", "mqa", "output_memory_format", "channels_innermost"]


def output_memory_format(x: Tensor) -> torch.memory_format:
    """channels_last when x is channels_last-contiguous and not also NCHW-contiguous, else contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def channels_innermost(weight: Tensor) -> Tensor:
    """The same conv weight [O, I, kh, kw] (or linear weight [O, I]), stored with the output channel innermost
    ([I][kh][kw][O] in memory).

    The CPU uib op on channels_last input reads its 1x1 weights as [Cin][Cout] matrices and its depthwise
    weights as [k][k][C] (csrc/cpu/uib.cpp, NHWC path); weights stored this way are used in place, any other
    strides cost a transposed copy per call. Values, shape and semantics are unchanged; fuse() stores the
    UIB, 1x1 and head weights of the 'cpu' backend so."""
    if weight.dim() == 2:
        return weight.t().contiguous().t()
    return weight.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)


def _conv_out(size, stride):
    return (size - 1) // stride + 1


def uib(x: Tensor, start_dw_w: Optional[Tensor], start_dw_b: Optional[Tensor], expand_w: Tensor,
        expand_b: Tensor, mid_dw_w: Optional[Tensor], mid_dw_b: Optional[Tensor], proj_w: Tensor,
        proj_b: Tensor, stride: int = 1, residual: bool = False, activation: str = "relu") -> Tensor:
    """Fused Universal Inverted Bottleneck (BatchNorm folded into each conv's weight and bias).

    start dw k x k (no act) -> expand 1x1 + act -> mid dw k x k + act -> proj 1x1 -> (+ x if residual).
    Shapes: x [N,Cin,H,W]; start_dw_w [Cin,1,k,k]; expand_w [mid,Cin,1,1]; mid_dw_w [mid,1,k,k];
    proj_w [Cout,mid,1,1]; biases [C]. Omit a dw weight (and its bias) to get the IB, ConvNext or FFN form.
    The stride sits on the mid dw when present, else on the start dw. activation: relu | gelu | none.
    """
    return torch.ops.mnv4.uib(x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b,
                              proj_w, proj_b, stride, residual, activation)


def mqa(x: Tensor, norm_scale: Tensor, norm_shift: Tensor, q_w: Tensor, k_dw_w: Optional[Tensor],
        k_dw_b: Optional[Tensor], k_w: Tensor, v_dw_w: Optional[Tensor], v_dw_b: Optional[Tensor],
        v_w: Tensor, o_w: Tensor, num_heads: int, kv_stride: int = 1, residual: bool = True) -> Tensor:
    """Fused Mobile MQA: per-channel affine pre-norm, one shared K/V head, optional strided dw on K and V.

    out = o_w @ concat_h(softmax(q_h k^T / sqrt(dk)) v) (+ x), q = q_w xn, k = k_w dw_k(xn), v = v_w dw_v(xn).
    Shapes: x [N,C,H,W]; norm_* [C]; q_w [h*dk,C,1,1]; k_dw_w/v_dw_w [C,1,3,3]; k_w [dk,C,1,1];
    v_w [dv,C,1,1]; o_w [Cout,h*dv,1,1] (layer scale folded in).
    """
    return torch.ops.mnv4.mqa(x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b,
                              v_w, o_w, num_heads, kv_stride, residual)


def _uib_fake(x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w, proj_b,
              stride=1, residual=False, activation="relu"):
    torch._check(x.dim() == 4, lambda: f"mnv4::uib: x must be 4-D [N, C, H, W]; got ndim {x.dim()}")
    n, _, h, w = x.shape
    shape = (n, proj_w.shape[0], _conv_out(h, stride), _conv_out(w, stride))
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=output_memory_format(x))


def _mqa_fake(x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w,
              num_heads, kv_stride=1, residual=True):
    torch._check(x.dim() == 4, lambda: f"mnv4::mqa: x must be 4-D [N, C, H, W]; got ndim {x.dim()}")
    n, _, h, w = x.shape
    shape = (n, o_w.shape[0], h, w)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=output_memory_format(x))


def _pointwise_fake(x, weight, bias=None, activation="none"):
    torch._check(x.dim() in (2, 4), lambda: f"mnv4_cpu::pointwise: x must be 2-D or 4-D; got ndim {x.dim()}")
    if x.dim() == 2:
        return torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    n, _, h, w = x.shape
    return torch.empty((n, weight.shape[0], h, w), dtype=x.dtype, device=x.device,
                       memory_format=output_memory_format(x))


def _conv_fake(x, weight, bias=None, stride=1, activation="none", proj_weight=None, proj_bias=None,
               residual=False, channels_last=False, proj_activation="none"):
    torch._check(x.dim() == 4, lambda: f"mnv4_cpu::conv: x must be 4-D; got ndim {x.dim()}")
    n, _, h, w = x.shape
    out = weight.shape[0] if proj_weight is None else proj_weight.shape[0]
    fmt = torch.channels_last if channels_last else output_memory_format(x)
    return torch.empty((n, out, _conv_out(h, stride), _conv_out(w, stride)), dtype=x.dtype, device=x.device,
                       memory_format=fmt)


# mnv4_cpu::sequence: its step codes, the tensors each step takes, activation codes (the C++ side's: csrc/codes.h;
# tests/test_codes.py checks that the two agree)
SEQ_CONV, SEQ_POINTWISE, SEQ_UIB, SEQ_MQA, SEQ_MEAN = range(5)
SEQ_TENSORS = (4, 2, 8, 10, 0)
SEQ_ACT = {"none": 0, "relu": 1, "gelu": 2}


def seq_conv_flags(residual=False, channels_last=False, proj_activation="none"):
    """A conv step's flags (its 4th int): 1 residual, 2 channels_last output, 4 x the projection's activation."""
    return int(residual) | 2 * int(channels_last) | 4 * SEQ_ACT[proj_activation]


def _sequence_fake(x, tensors, program):
    torch._check(len(program) > 0 and len(program) % 4 == 0,
                 lambda: f"mnv4_cpu::sequence: program must hold 4 ints per step; got {len(program)}")
    h, i = x, 0
    for s in range(0, len(program), 4):
        op, a, b, c = program[s:s + 4]
        torch._check(SEQ_CONV <= op <= SEQ_MEAN, lambda: f"mnv4_cpu::sequence: unknown op code {op}")
        t = tensors[i:i + SEQ_TENSORS[op]]
        if op == SEQ_CONV:
            h = _conv_fake(h, t[0], t[1], a, "none", t[2], t[3], bool(c & 1), bool(c & 2))
        elif op == SEQ_POINTWISE:
            h = _pointwise_fake(h, t[0], t[1])
        elif op == SEQ_UIB:
            h = _uib_fake(h, *t, stride=a)
        elif op == SEQ_MQA:
            h = _mqa_fake(h, *t, num_heads=a, kv_stride=b)
        else:
            h = h.new_empty(h.shape[:2])
        i += SEQ_TENSORS[op]
    return h


def register_fakes():
    torch.library.register_fake("mnv4::uib")(_uib_fake)
    torch.library.register_fake("mnv4::mqa")(_mqa_fake)
    torch.library.register_fake("mnv4_cpu::pointwise")(_pointwise_fake)
    torch.library.register_fake("mnv4_cpu::conv")(_conv_fake)
    torch.library.register_fake("mnv4_cpu::sequence")(_sequence_fake)
