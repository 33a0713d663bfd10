"""Typed Python wrappers and fake (meta) kernels for the mnv4 ops.

The schemas live in csrc/ops.cpp; the kernels in csrc/cpu, csrc/cuda and mnv4_kernels/triton. The fake
kernels here give torch.compile / torch.export the output's shape *and strides* without running anything:
the output layout follows the input (see `_output_memory_format`, mirrored in csrc/params.h).
"""

from typing import Optional

import torch
from torch import Tensor

from . import validate

__all__ = ["uib", "mqa", "output_memory_format", "channels_innermost", "register_autograd"]


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
    p = validate.uib(x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w, proj_b, stride,
                     residual, activation)
    return torch.empty((p["batch"], p["cout"], p["oh"], p["ow"]), dtype=x.dtype, device=x.device,
                       memory_format=output_memory_format(x))


def _mqa_fake(x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w,
              num_heads, kv_stride=1, residual=True):
    p = validate.mqa(x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w, num_heads,
                     kv_stride, residual)
    return torch.empty((p["batch"], p["cout"], p["h"], p["w"]), dtype=x.dtype, device=x.device,
                       memory_format=output_memory_format(x))


def _pointwise_fake(x, weight, bias=None, activation="none"):
    p = validate.pointwise(x, weight, bias, activation)
    if x.dim() == 2:
        return torch.empty((x.shape[0], p["out"]), dtype=x.dtype, device=x.device)
    n, _, h, w = x.shape
    return torch.empty((n, p["out"], h, w), dtype=x.dtype, device=x.device, memory_format=output_memory_format(x))


def _mean_fake(x):
    return x.new_empty(validate.mean(x))


def _conv_fake(x, weight, bias=None, stride=1, activation="none", proj_weight=None, proj_bias=None,
               residual=False, channels_last=False, proj_activation="none"):
    p = validate.conv(x, weight, bias, stride, activation, proj_weight, proj_bias, residual, channels_last,
                      proj_activation)
    fmt = torch.channels_last if channels_last else output_memory_format(x)
    return torch.empty((p["batch"], p["out"], p["oh"], p["ow"]), dtype=x.dtype, device=x.device,
                       memory_format=fmt)


# mnv4_cpu::sequence: its step codes, the tensors each step takes, activation codes (the C++ side's: csrc/codes.h;
# tests/test_codes.py checks that the two agree)
SEQ_CONV, SEQ_POINTWISE, SEQ_UIB, SEQ_MQA, SEQ_MEAN = range(5)
SEQ_TENSORS = (4, 2, 8, 10, 0)
SEQ_ACT = validate.ACTIVATIONS


def seq_conv_flags(residual=False, channels_last=False, proj_activation="none"):
    """A conv step's flags (its 4th int): 1 residual, 2 channels_last output, 4 x the projection's activation."""
    return int(residual) | 2 * int(channels_last) | 4 * SEQ_ACT[proj_activation]


_SEQ_OP = "mnv4_cpu::sequence"
_SEQ_ACT_NAME = {v: k for k, v in SEQ_ACT.items()}
# the tensors of each step that must be given (index within the step, name), as in csrc/cpu/sequence.cpp
_SEQ_REQUIRED = {SEQ_CONV: ((0, "weight"),), SEQ_POINTWISE: ((0, "weight"),),
                 SEQ_UIB: ((2, "expand_w"), (3, "expand_b"), (6, "proj_w"), (7, "proj_b")),
                 SEQ_MQA: ((0, "norm_scale"), (1, "norm_shift"), (2, "q_w"), (5, "k_w"), (8, "v_w"), (9, "o_w")),
                 SEQ_MEAN: ()}


def _seq_activation(code, step):
    validate.check(code in _SEQ_ACT_NAME,
                   lambda: f"{_SEQ_OP}: program step {step}: activation code must be 0 (none), 1 (relu) or 2 "
                           f"(gelu); got {code}")
    return _SEQ_ACT_NAME[code]


def _sequence_fake(x, tensors, program):
    """The checks of csrc/cpu/sequence.cpp (program and tensor list first, then each step's own op checks
    on the shape reaching it), and the result's shape."""
    check = validate.check
    check(len(program) > 0 and len(program) % 4 == 0,
          lambda: f"{_SEQ_OP}: program must hold 4 ints per step and at least one step; got {len(program)} ints")
    steps = [tuple(program[s:s + 4]) for s in range(0, len(program), 4)]
    for s, (op, *_) in enumerate(steps):
        check(SEQ_CONV <= op <= SEQ_MEAN,
              lambda: f"{_SEQ_OP}: program step {s}: unknown op code {op} (0 conv, 1 pointwise, 2 uib, 3 mqa, "
                      "4 mean)")
    need = sum(SEQ_TENSORS[op] for op, *_ in steps)
    check(len(tensors) == need, lambda: f"{_SEQ_OP}: the program's steps take {need} tensors; got {len(tensors)}")
    h, i = x, 0
    for s, (op, a, b, c) in enumerate(steps):
        t = tensors[i:i + SEQ_TENSORS[op]]
        for j, what in _SEQ_REQUIRED[op]:
            check(t[j] is not None, lambda: f"{_SEQ_OP}: tensors[{i + j}] (step {s}'s {what}) must not be None")
        if op == SEQ_CONV:
            h = _conv_fake(h, t[0], t[1], a, _seq_activation(b, s), t[2], t[3], bool(c & 1), bool(c & 2),
                           _seq_activation(c >> 2, s))
        elif op == SEQ_POINTWISE:
            h = _pointwise_fake(h, t[0], t[1], _seq_activation(b, s))
        elif op == SEQ_UIB:
            h = _uib_fake(h, *t, stride=a, residual=c != 0, activation=_seq_activation(b, s))
        elif op == SEQ_MQA:
            h = _mqa_fake(h, *t, num_heads=a, kv_stride=b, residual=c != 0)
        else:
            check(h.dim() == 4, lambda: f"{_SEQ_OP}: program step {s}: mean needs a 4-D input; got ndim {h.dim()}")
            h = h.new_empty(h.shape[:2])
        i += SEQ_TENSORS[op]
    return h


# ---- autograd ----------------------------------------------------------------------------------------------
# The forward saves only its inputs; the backward recomputes the block through the plain-torch composite of
# mnv4_reference.functional and differentiates that (activation checkpointing: the expanded tensor, the
# attention matrix and the other intermediates are never kept between forward and backward). The gradients
# are those of the composite, which computes the same function as the kernels.

def _setup_context(ctx, inputs, output):
    ctx.is_tensor = [isinstance(a, Tensor) for a in inputs]
    ctx.constants = [None if t else a for a, t in zip(inputs, ctx.is_tensor)]
    ctx.save_for_backward(*[a for a, t in zip(inputs, ctx.is_tensor) if t])


def _recompute_backward(composite_name):
    def backward(ctx, grad):
        from mnv4_reference import functional

        saved = iter(ctx.saved_tensors)
        args = [next(saved) if t else c for t, c in zip(ctx.is_tensor, ctx.constants)]
        want = [i for i, t in enumerate(ctx.is_tensor) if t and ctx.needs_input_grad[i]]
        grads = [None] * len(args)
        if not want:
            return tuple(grads)
        # Under create_graph (double backward) the engine runs this with grad mode on: recompute on the saved
        # tensors themselves so the result stays connected to them; otherwise on detached leaves.
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not create_graph:
                args = [a.detach().requires_grad_(i in want) if t else a
                        for i, (a, t) in enumerate(zip(args, ctx.is_tensor))]
            out = getattr(functional, composite_name)(*args)
            got = torch.autograd.grad(out, [args[i] for i in want], grad, create_graph=create_graph,
                                      allow_unused=True)
        for i, g in zip(want, got):
            grads[i] = g
        return tuple(grads)

    backward.__name__ = f"{composite_name}_backward"
    return backward


def register_autograd(qualname: str, composite_name: str):
    """Autograd for the op `qualname` (schema of mnv4::uib or mnv4::mqa): backward = the composite
    mnv4_reference.functional.<composite_name> recomputed from the saved inputs."""
    torch.library.register_autograd(qualname, _recompute_backward(composite_name), setup_context=_setup_context)


def register_python_kernels():
    """The fake kernels of every op and the autograd of mnv4::uib / mnv4::mqa (called once, on import)."""
    torch.library.register_fake("mnv4::uib")(_uib_fake)
    torch.library.register_fake("mnv4::mqa")(_mqa_fake)
    torch.library.register_fake("mnv4_cpu::pointwise")(_pointwise_fake)
    torch.library.register_fake("mnv4_cpu::conv")(_conv_fake)
    torch.library.register_fake("mnv4_cpu::mean")(_mean_fake)
    torch.library.register_fake("mnv4_cpu::sequence")(_sequence_fake)
    register_autograd("mnv4::uib", "uib")
    register_autograd("mnv4::mqa", "mqa")
