"""bf16 references for the CPU ops' tests: the plain-torch composites computed in fp32 from bf16 operands, each
stage's output rounded to bf16 where the bf16 kernels round it (csrc/cpu/uib.cpp, conv.cpp: every stage's
output is stored in bf16, every sum is fp32), and the tolerance against them (see tests/test_bf16_model.py).
"""

import torch
import torch.nn.functional as TF

from mnv4_reference import functional as F

# the unit roundoff of bf16: the two sides round the same fp32 values up to the summation order
BF16_TOL = 2.0 ** -8


def round_bf16(t):
    """t rounded to bf16, as fp32 (the kernels' one rounding of a stage's output)."""
    return t.to(torch.bfloat16).float()


def _f(t):
    return t.float() if isinstance(t, torch.Tensor) else t


def staged_uib(x, sw, sb, ew, eb, mw, mb, pw, pb, stride, residual, activation):
    """mnv4_reference.functional.uib in fp32 from bf16 operands, each stage's output rounded to bf16."""
    act = F.activation_fn(activation)
    x, sw, sb, ew, eb, mw, mb, pw, pb = map(_f, (x, sw, sb, ew, eb, mw, mb, pw, pb))
    h = x
    if sw is not None:
        h = round_bf16(F._dw(h, sw, sb, 1 if mw is not None else stride))
    h = round_bf16(act(TF.conv2d(h, ew, eb)))
    if mw is not None:
        h = round_bf16(act(F._dw(h, mw, mb, stride)))
    y = TF.conv2d(h, pw, pb)
    return round_bf16(y + x if residual else y)


def staged_conv(x, w, b, stride, act, pw=None, pb=None, residual=False, pact="none"):
    """mnv4_cpu::conv's composite (k x k conv + act [, 1x1 projection + act] [+ x]) in fp32 from bf16 operands,
    the conv's output rounded to bf16 before the projection, and the result."""
    h = F.activation_fn(act)(TF.conv2d(_f(x), _f(w), _f(b), stride=stride, padding=w.shape[-1] // 2))
    if pw is not None:
        h = F.activation_fn(pact)(TF.conv2d(round_bf16(h), _f(pw), _f(pb)))
    return round_bf16(h + _f(x) if residual else h)
