"""bf16 / fp16 references for the CPU ops' tests: the plain-torch composites computed in fp32 from bf16 (fp16)
operands, each stage's output rounded to bf16 (fp16) where the kernels round it (csrc/cpu/uib.cpp, conv.cpp,
mqa.cpp: every stored intermediate is in the input's dtype, every sum is fp32), and the tolerance against them
(see tests/test_bf16_model.py). The dtype is x's: fp16 for an fp16 x, else bf16. On a convert-on-load bf16
table (torch.ops.mnv4_cpu.lp_convert_on_load()) the uib and the conv keep their intermediates in fp32 and round
only their output, as fp16 does where the ops compute it in fp32 (torch.ops.mnv4_cpu.f16_isa() == "fp32");
staged_uib and staged_conv follow the running table.
"""

import math

import torch
import torch.nn.functional as TF

from mnv4_reference import functional as F

# the unit roundoff of bf16: the two sides round the same fp32 values up to the summation order
BF16_TOL = 2.0 ** -8


# fp16 on the f16 kernels (neon_fp16, avx512fp16 and their emulations): 2^-8, fp16's unit roundoff 2^-11 times 8.
# Those kernels sum chunks of f16_acc_chunk products (8 on neon_fp16, 16 on avx512fp16) in fp16 before the fp32
# accumulator, adding up to gamma_chunk(2^-11) of each chunk's sum of |products| (ukernels_bf16.h); the
# composite sums in fp32. Rounding boundaries aside, the difference is a sum of such chunk errors of random sign:
# norm-wise (rel_err) about sqrt(chunk) roundings, far below 2^-8 of the result on these random operands even
# at chunk 16; a wrong operand, tap, bias or residual gives far more.
F16_TOL = 2.0 ** -8


def round_to(t, dtype):
    """t rounded to dtype, as fp32 (the kernels' one rounding of a stage's output)."""
    return t.to(dtype).float()


def _low(x):
    """The reduced precision the op runs for input x: fp16 for an fp16 x, else bf16."""
    return torch.float16 if x.dtype == torch.float16 else torch.bfloat16


def f16_on_kernels():
    """Whether the CPU ops compute fp16 on the f16 kernels here (aarch64 with FP16, x86 with AVX512-FP16, or an
    emulation forced by MNV4_CPU_LP_ISA): then fp16 rounds where bf16 does, and its tests compare with the staged
    composites within F16_TOL; else it is computed in fp32 and rounded once."""
    return torch.ops.mnv4_cpu.f16_isa() != "fp32"


def _rounds_inside(dtype):
    if dtype == torch.float16:
        return f16_on_kernels()
    return not torch.ops.mnv4_cpu.lp_convert_on_load()


def _f(t):
    return t.float() if isinstance(t, torch.Tensor) else t


def uib_rounds_inside(dtype=torch.bfloat16):
    """Whether the running table of dtype's uib rounds its intermediates (the start dw, expand and mid dw outputs)
    to dtype: on tables with a bf16 dot product (fp16 arithmetic); a convert-on-load table keeps them in fp32."""
    return _rounds_inside(dtype)


def staged_uib(x, sw, sb, ew, eb, mw, mb, pw, pb, stride, residual, activation, rounds_inside=None):
    """mnv4_reference.functional.uib in fp32 from bf16 (fp16) operands, the output rounded to bf16 (fp16) and,
    when `rounds_inside` (default: as the running table, uib_rounds_inside()), each stage's output too."""
    act = F.activation_fn(activation)
    dt = _low(x)
    rnd = lambda t: round_to(t, dt)  # noqa: E731
    x, sw, sb, ew, eb, mw, mb, pw, pb = map(_f, (x, sw, sb, ew, eb, mw, mb, pw, pb))
    inner = rnd if (uib_rounds_inside(dt) if rounds_inside is None else rounds_inside) else (lambda t: t)
    h = x
    if sw is not None:
        h = inner(F._dw(h, sw, sb, 1 if mw is not None else stride))
    h = inner(act(TF.conv2d(h, ew, eb)))
    if mw is not None:
        h = inner(act(F._dw(h, mw, mb, stride)))
    y = TF.conv2d(h, pw, pb)
    return rnd(y + x if residual else y)


def conv_rounds_inside(dtype=torch.bfloat16):
    """Whether the running table of dtype's conv rounds the k x k conv's output (the projection's input) to
    dtype: on tables with a bf16 dot product (fp16 arithmetic); a convert-on-load table keeps it in fp32."""
    return _rounds_inside(dtype)


def staged_conv(x, w, b, stride, act, pw=None, pb=None, residual=False, pact="none", rounds_inside=None):
    """mnv4_cpu::conv's composite (k x k conv + act [, 1x1 projection + act] [+ x]) in fp32 from bf16 (fp16)
    operands, the result rounded to bf16 (fp16) and, when `rounds_inside` (default: as the running table,
    conv_rounds_inside()), the conv's output before the projection too."""
    dt = _low(x)
    rnd = lambda t: round_to(t, dt)  # noqa: E731
    inner = rnd if (conv_rounds_inside(dt) if rounds_inside is None else rounds_inside) else (lambda t: t)
    h = F.activation_fn(act)(TF.conv2d(_f(x), _f(w), _f(b), stride=stride, padding=w.shape[-1] // 2))
    if pw is not None:
        h = F.activation_fn(pact)(TF.conv2d(inner(h), _f(pw), _f(pb)))
    return rnd(h + _f(x) if residual else h)


def staged_mqa(x, scale, shift, q_w, kdw, kdb, k_w, vdw, vdb, v_w, o_w, num_heads, kv_stride=1, residual=True,
               round_logits=True):
    """mnv4_reference.functional.mqa in fp32 from bf16 (fp16) operands, rounded to bf16 (fp16) where
    csrc/cpu/mqa.cpp rounds (its header comment): xn, the K/V dw outputs, Q, K, V, the logits, the normalised
    probabilities, the attention output and the result; the projection weights in bf16 (fp16), K's with the
    softmax scale c = log2(e) / sqrt(dk) folded in before that rounding (the softmax then runs in base 2, in fp32).
    round_logits=False keeps the logits in fp32: one rounding point fewer than the kernel, which the bf16 tests'
    tolerance must tell apart (test_mqa_cpu.test_bf16_tolerance_resolves_the_logits_rounding)."""
    dt = _low(x)
    rnd = lambda t: round_to(t, dt)  # noqa: E731
    x, scale, shift, q_w, kdw, kdb, k_w, vdw, vdb, v_w, o_w = map(
        _f, (x, scale, shift, q_w, kdw, kdb, k_w, vdw, vdb, v_w, o_w))
    B, C, H, W = x.shape
    dk, dv = k_w.shape[0], v_w.shape[0]

    def proj(h, w):
        return rnd(TF.conv2d(h, rnd(w.reshape(w.shape[0], -1, 1, 1))))

    xn = rnd(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    k_in = rnd(F._dw(xn, kdw, kdb, kv_stride)) if kdw is not None else xn
    v_in = rnd(F._dw(xn, vdw, vdb, kv_stride)) if vdw is not None else xn
    q = proj(xn, q_w).reshape(B, num_heads, dk, H * W).transpose(-1, -2)  # [B, h, N, dk]
    k = proj(k_in, k_w * (math.log2(math.e) / math.sqrt(dk))).flatten(2)  # [B, dk, M], base-2 logits' scale
    v = proj(v_in, v_w).flatten(2)  # [B, dv, M]
    logits = q @ k.unsqueeze(1)  # [B, h, N, M]
    if round_logits:
        logits = rnd(logits)
    p = torch.exp2(logits - logits.amax(-1, keepdim=True))
    p = rnd(p * (1.0 / p.sum(-1, keepdim=True)))  # normalised by the sum of the unrounded values
    o = rnd(p @ v.transpose(-1, -2).unsqueeze(1))  # [B, h, N, dv]
    o = o.transpose(-1, -2).reshape(B, num_heads * dv, H, W)
    y = TF.conv2d(o, rnd(o_w.reshape(o_w.shape[0], -1, 1, 1)))
    return rnd(y + x if residual else y)
