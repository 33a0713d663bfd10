"""Fused Universal Inverted Bottleneck in one Triton kernel: `torch.ops.mnv4.uib_triton`.

Same schema and semantics as `mnv4::uib` (csrc/ops.cpp; oracle: mnv4_reference.functional.uib). With BatchNorm
folded into every conv and the layer scale into the projection, for one output pixel p and channel o:

    s[c, q]  = sb[c] + sum_{a,b} sw[c,a,b] x[c, q*S_s + (a,b) - ks//2]      (start dw, if given; else s = x)
    e[m, q]  = act(eb[m] + sum_c ew[m,c] s[c, q])                            (expansion 1x1)
    d[m, p]  = act(mb[m] + sum_{a,b} mw[m,a,b] e[m, p*S_m + (a,b) - km//2])  (mid dw, if given; else d = e)
    y[o, p]  = pb[o] + sum_m pw[o,m] d[m, p]  (+ x[o, p] if residual)        (projection 1x1)

with zero padding (k//2) for both depthwise convs: e is 0 (not act(eb)) outside the image. The block stride
sits on the mid dw when there is one (S_m = stride, S_s = 1), else on the start dw. act: relu | gelu (erf) |
none.

Structure (one program = one tile of output pixels x one tile of output channels):
  * The "expansion grid" is the resolution of e (the mid dw input). A program owns an RH x RW region of it
    (powers of two), which is the output tile plus the mid dw halo: the output tile is
    OTH x OTW = ((RH - km) // S_m + 1) x ((RW - km) // S_m + 1) pixels (RH x RW without a mid dw). The halo
    pixels are recomputed by the neighbouring tiles (a cost of RH*RW / (OTH*OTW*S_m^2) on the expansion,
    1.3x-1.8x for 16x16 regions at k 3/5) instead of k*k recomputes of the expansion per tap.
  * The expansion's A tile s (the start dw computed on the fly from x, zero-padded, or x itself) for all of
    Cin is computed once per program and kept on chip when it is small enough (HOIST: [RH*RW, Cin] <= 16K
    elements by default, i.e. Cin <= 128 for 8x16 regions); otherwise it is recomputed per mid chunk in BLOCK_CI chunks.
  * Loop over mid channels in chunks of BLOCK_MC: expand the region (tl.dot, K = Cin), act, zero outside
    the image; mid dw by tl.gather of the k*k shifted rows of the on-chip chunk, act; then accumulate
    chunk @ proj_w^T into the [pixels, BLOCK_CO] fp32 accumulator. The expanded tensor never leaves the
    chip (registers / shared memory); only x, the weights and y touch global memory.
  * Epilogue: + proj bias (+ x), cast to y's dtype, strided store (NCHW or channels_last).
If Cout > BLOCK_CO the expansion is recomputed per output-channel tile; autotuning weighs that against the
extra parallelism (small spatial sizes at batch 1 have few pixel tiles). Not yet measured on a GPU: how fast
tl.gather (lowered through shared memory when rows cross warps) makes the mid dw.

Numerics: fp32 accumulation everywhere. fp32 inputs use IEEE fp32 dots (no TF32: the model contract is
rel. err <= 1e-5). fp16/bf16 inputs feed tl.dot in their own dtype (tensor cores) and accumulate in fp32; the
intermediate s and d are rounded to that dtype for the dot, as a per-op composite in that dtype would.
Under TRITON_INTERPRET=1 the interpreter's bf16 tl.dot is wrong (it multiplies the raw uint16 bit patterns),
so bf16 dots are upcast to fp32 there (UPCAST_DOT); on a GPU bf16 runs natively.
"""

import os

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .. import validate
from ..ops import output_memory_format
from ._common import check, keep_opaque_when_interpreted, metadata_only
from ._tuning import gpu_configs, prune_args

__all__ = ["uib_triton", "validate_uib"]

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# HOIST_LIMIT (a config field): the largest A tile [RH*RW, Cin] (elements) kept on chip across the mid loop.
# GPU: 16K (32 KiB fp16, e.g. 8x16 regions up to Cin 128, 8x8 up to 256); a few configs allow 32K (8x8 with
# Cin 512: Conv-L's last stage), else the start dw is recomputed per mid chunk. Interpreter: 1K (16 x 64), so
# the tests run both paths: hoisted for Cin <= 16, chunked above.
_HOIST = 128 * 128


# (RH, RW, BLOCK_CI, BLOCK_MC, BLOCK_CO, num_warps, num_stages, HOIST_LIMIT) for the MobileNetV4 UIB shapes:
# Cin 48..512, mid up to 2048, Cout 48..512, spatial 7..56. 8x8 regions suit 7x7 / 14x14 maps; 8x16 and
# 16x16 cut the halo overhead on 28..56 maps; BLOCK_CO 128..256 avoids recomputing the expansion for wide
# outputs; BLOCK_MC 128 with a 32K hoist limit is for mid 2048 / Cin 512 at 7x7. The first is valid alone for
# every shape (MNV4_TRITON_ONE_CONFIG runs it unpruned: the kernel decides HOIST itself).
GPU_CONFIGS = [
    triton.Config(dict(RH=rh, RW=rw, BLOCK_CI=ci, BLOCK_MC=mc, BLOCK_CO=co, HOIST_LIMIT=hl), num_warps=w,
                  num_stages=s)
    for rh, rw, ci, mc, co, w, s, hl in [
        (8, 8, 32, 32, 64, 4, 2, _HOIST),
        (8, 8, 64, 32, 128, 4, 2, _HOIST),
        (8, 8, 64, 64, 128, 8, 2, _HOIST),
        (8, 8, 32, 32, 256, 8, 2, _HOIST),
        (8, 8, 64, 64, 128, 8, 2, 2 * _HOIST),
        (8, 8, 64, 128, 128, 8, 2, 2 * _HOIST),
        (8, 16, 32, 32, 64, 4, 2, _HOIST),
        (8, 16, 64, 32, 128, 8, 2, _HOIST),
        (8, 16, 64, 64, 64, 8, 3, _HOIST),
        (16, 16, 32, 32, 64, 8, 2, _HOIST),
        (16, 16, 32, 32, 128, 8, 2, _HOIST),
    ]
]


def _configs():
    if _INTERPRET:
        # One small config: the interpreter runs every program in numpy; 16 is tl.dot's minimum block on
        # GPUs, kept here so the interpreted kernel is the one a GPU compiles. 8x8 regions make several
        # tiles (and tile seams) on the test images.
        return [triton.Config(dict(RH=8, RW=8, BLOCK_CI=16, BLOCK_MC=16, BLOCK_CO=16, HOIST_LIMIT=1024), num_warps=4,
                              num_stages=1)]
    return gpu_configs(GPU_CONFIGS)


def _prune(configs, named_args, **kwargs):
    """Clamp channel blocks to the (power-of-two, >= 16) channel counts and drop the duplicates (BLOCK_CI is
    unused when the kernel hoists the whole-Cin A tile). Reads the launch's positional and keyword arguments
    alike (prune_args)."""
    a = prune_args(named_args, kwargs)

    def cap(n):
        return max(16, triton.next_power_of_2(int(n)))
    ci, mc, co = cap(a["C_in"]), cap(a["C_mid"]), cap(a["C_out"])
    seen, out = set(), []
    for c in configs:
        kw = dict(c.kwargs)
        hoisted = ci * kw["RH"] * kw["RW"] <= kw["HOIST_LIMIT"]
        kw["HOIST_LIMIT"] = ci * kw["RH"] * kw["RW"] if hoisted else 0  # canonical, so duplicates meet
        kw["BLOCK_CI"] = 16 if hoisted else min(kw["BLOCK_CI"], ci)
        kw["BLOCK_MC"] = min(kw["BLOCK_MC"], mc)
        kw["BLOCK_CO"] = min(kw["BLOCK_CO"], co)
        key = (tuple(sorted(kw.items())), c.num_warps, c.num_stages)
        if key not in seen:
            seen.add(key)
            out.append(triton.Config(kw, num_warps=c.num_warps, num_stages=c.num_stages))
    return out


@triton.jit
def _act(v, ACT: tl.constexpr):
    """relu / gelu(erf) / identity, NaN in -> NaN out as torch.relu and F.gelu (tl.maximum(v, 0.0) would lower
    to maxnumf on a GPU, which returns 0 for NaN)."""
    if ACT == 1:
        v = tl.where(v < 0.0, 0.0, v)
    elif ACT == 2:
        v = 0.5 * v * (1.0 + tl.erf(v * 0.7071067811865476))
    return v


@triton.jit
def _input_tile(x_base, X_stride_c, X_stride_h, X_stride_w, SW_ptr, SW_stride_c, SW_stride_h, SW_stride_w, SB_ptr,
                ci, ci_ok, eh, ew, r_in, H, W, KS: tl.constexpr, S_START: tl.constexpr, R: tl.constexpr):
    """fp32 [R, len(ci)]: the expansion input at the region pixels (eh, ew): the start dw of x (zero padding,
    + bias) when KS > 0, else x itself; 0 at region pixels outside the image."""
    if KS > 0:
        s = tl.zeros((R, ci.shape[0]), dtype=tl.float32)
        for a in range(KS):  # rows: a runtime loop (compile time); columns unrolled
            ih = eh * S_START - KS // 2 + a
            for b in tl.static_range(KS):
                iw = ew * S_START - KS // 2 + b
                ok = r_in & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                xv = tl.load(x_base + ci[None, :] * X_stride_c + (ih * X_stride_h + iw * X_stride_w)[:, None],
                             mask=ok[:, None] & ci_ok[None, :], other=0.0).to(tl.float32)
                wv = tl.load(SW_ptr + ci * SW_stride_c + a * SW_stride_h + b * SW_stride_w,
                             mask=ci_ok, other=0.0).to(tl.float32)
                s += xv * wv[None, :]
        sb = tl.load(SB_ptr + ci, mask=ci_ok, other=0.0).to(tl.float32)
        s = s + sb[None, :]
    else:
        s = tl.load(x_base + ci[None, :] * X_stride_c + (eh * X_stride_h + ew * X_stride_w)[:, None],
                    mask=r_in[:, None] & ci_ok[None, :], other=0.0).to(tl.float32)
    return s


def _out_tile(r, k, s):
    """Output pixels per region side (host mirror of the in-kernel constexpr arithmetic)."""
    return (r - k) // s + 1 if k else r


@triton.autotune(configs=_configs(), key=["C_in", "C_mid", "C_out", "EH", "EW", "KS", "KM", "S_MID"],
                 prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _uib_kernel(
    X_ptr, X_stride_n, X_stride_c, X_stride_h, X_stride_w,
    SW_ptr, SW_stride_c, SW_stride_h, SW_stride_w, SB_ptr,
    EW_ptr, EW_stride_o, EW_stride_i, EB_ptr,
    MW_ptr, MW_stride_c, MW_stride_h, MW_stride_w, MB_ptr,
    PW_ptr, PW_stride_o, PW_stride_i, PB_ptr,
    Y_ptr, Y_stride_n, Y_stride_c, Y_stride_h, Y_stride_w,
    C_in, C_mid, C_out, H, W, EH, EW, OH, OW,
    KS: tl.constexpr,  # start dw kernel size, 0 = no start dw (IB/FFN forms): removes its code
    S_START: tl.constexpr,  # start dw stride (2 only for ConvNext blocks with stride): folds index math
    KM: tl.constexpr,  # mid dw kernel size, 0 = none (ConvNext/FFN): no halo, region = output tile
    S_MID: tl.constexpr,  # mid dw stride: sets the output grid of the region at compile time
    ACT: tl.constexpr,  # 0 none, 1 relu, 2 gelu(erf): the activation is inlined, no runtime branch
    RESIDUAL: tl.constexpr,  # add x in the epilogue: removes a load when off
    UPCAST_DOT: tl.constexpr,  # dot in fp32 even for 16-bit inputs (interpreter's bf16 dot is wrong)
    RH: tl.constexpr, RW: tl.constexpr,  # region of the expansion grid per program (powers of two, >= KM)
    CI_ALL: tl.constexpr,  # Cin rounded up to a power of two (>= 16): the hoisted A tile's width
    BLOCK_CI: tl.constexpr,  # Cin chunk: K of the expansion dot when the A tile is not hoisted
    BLOCK_MC: tl.constexpr,  # mid chunk kept on chip: N of the expansion dot, K of the projection dot
    BLOCK_CO: tl.constexpr,  # Cout tile: N of the projection dot (fp32 accumulator [pixels, BLOCK_CO])
    HOIST_LIMIT: tl.constexpr,  # hoist the A tile [RH*RW, CI_ALL] out of the mid loop up to this many elements
):
    # Output tile geometry, all compile-time: PH x PW is the power-of-two grid the output tile sits in.
    if KM > 0:
        PH: tl.constexpr = RH // S_MID
        PW: tl.constexpr = RW // S_MID
        OTH: tl.constexpr = (RH - KM) // S_MID + 1
        OTW: tl.constexpr = (RW - KM) // S_MID + 1
        PM: tl.constexpr = KM // 2
    else:
        PH: tl.constexpr = RH
        PW: tl.constexpr = RW
        OTH: tl.constexpr = RH
        OTW: tl.constexpr = RW
        PM: tl.constexpr = 0
    if UPCAST_DOT:  # DT: the dtype tl.dot's operands are cast to
        DT: tl.constexpr = tl.float32
    else:
        DT: tl.constexpr = X_ptr.dtype.element_ty

    n_tiles_h = tl.cdiv(OH, OTH)
    n_tiles_w = tl.cdiv(OW, OTW)
    pid = tl.program_id(0)
    n_co = tl.cdiv(C_out, BLOCK_CO)
    pid_co = pid % n_co
    rest = pid // n_co
    tile_w = rest % n_tiles_w
    rest = rest // n_tiles_w
    tile_h = rest % n_tiles_h
    n = (rest // n_tiles_h).to(tl.int64)  # int64: n * X_stride_n overflows int32 for large batches
    x_base = X_ptr + n * X_stride_n
    y_base = Y_ptr + n * Y_stride_n

    oh0 = tile_h * OTH
    ow0 = tile_w * OTW
    # Region rows/cols on the expansion grid (start-dw output resolution), halo included.
    r = tl.arange(0, RH * RW)
    eh = oh0 * S_MID - PM + r // RW
    ew = ow0 * S_MID - PM + r % RW
    r_in = (eh >= 0) & (eh < EH) & (ew >= 0) & (ew < EW)

    # Output pixels of this tile.
    p = tl.arange(0, PH * PW)
    pi = p // PW
    pj = p % PW
    oh = oh0 + pi
    ow = ow0 + pj
    p_ok = (pi < OTH) & (pj < OTW) & (oh < OH) & (ow < OW)

    co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_ok = co < C_out
    acc = tl.zeros((PH * PW, BLOCK_CO), dtype=tl.float32)

    # The expansion's A tile (x after the start dw, all of Cin) computed once, when it fits on chip: the start
    # dw then costs KS*KS FMAs per input element once per tile instead of once per mid chunk.
    HOIST: tl.constexpr = CI_ALL * RH * RW <= HOIST_LIMIT
    if HOIST:
        ci_all = tl.arange(0, CI_ALL)
        ci_all_ok = ci_all < C_in
        s_all = _input_tile(x_base, X_stride_c, X_stride_h, X_stride_w, SW_ptr, SW_stride_c, SW_stride_h,
                            SW_stride_w, SB_ptr, ci_all, ci_all_ok, eh, ew, r_in, H, W, KS, S_START, RH * RW).to(DT)

    for mc0 in range(0, C_mid, BLOCK_MC):
        mc = mc0 + tl.arange(0, BLOCK_MC)
        mc_ok = mc < C_mid
        # ---- expansion of the region for this mid chunk: e = s @ ew^T ----
        if HOIST:
            w_e = tl.load(EW_ptr + mc[None, :] * EW_stride_o + ci_all[:, None] * EW_stride_i,
                          mask=ci_all_ok[:, None] & mc_ok[None, :], other=0.0)  # [CI_ALL, BLOCK_MC] = ew^T
            e = tl.dot(s_all, w_e.to(DT), input_precision="ieee")
        else:
            e = tl.zeros((RH * RW, BLOCK_MC), dtype=tl.float32)
            for ci0 in range(0, C_in, BLOCK_CI):
                ci = ci0 + tl.arange(0, BLOCK_CI)
                ci_ok = ci < C_in
                s = _input_tile(x_base, X_stride_c, X_stride_h, X_stride_w, SW_ptr, SW_stride_c, SW_stride_h,
                                SW_stride_w, SB_ptr, ci, ci_ok, eh, ew, r_in, H, W, KS, S_START, RH * RW)
                w_e = tl.load(EW_ptr + mc[None, :] * EW_stride_o + ci[:, None] * EW_stride_i,
                              mask=ci_ok[:, None] & mc_ok[None, :], other=0.0)  # [BLOCK_CI, BLOCK_MC] = ew^T
                e = tl.dot(s.to(DT), w_e.to(DT), e, input_precision="ieee")
        eb = tl.load(EB_ptr + mc, mask=mc_ok, other=0.0).to(tl.float32)
        e = _act(e + eb[None, :], ACT)
        e = tl.where(r_in[:, None], e, 0.0)  # the mid dw's zero padding outside the image

        # ---- mid dw on chip: gather the k*k shifted region rows for every output pixel ----
        if KM > 0:
            d = tl.zeros((PH * PW, BLOCK_MC), dtype=tl.float32)
            for a in range(KM):  # rows: a runtime loop (compile time); columns unrolled
                for b in tl.static_range(KM):
                    src = (pi * S_MID + a) * RW + (pj * S_MID + b)
                    src = tl.minimum(src, RH * RW - 1)  # pixels outside the output tile read a valid row
                    idx = tl.broadcast_to(src[:, None], (PH * PW, BLOCK_MC))
                    wv = tl.load(MW_ptr + mc * MW_stride_c + a * MW_stride_h + b * MW_stride_w,
                                 mask=mc_ok, other=0.0).to(tl.float32)
                    d += tl.gather(e, idx, 0) * wv[None, :]
            mb = tl.load(MB_ptr + mc, mask=mc_ok, other=0.0).to(tl.float32)
            d = _act(d + mb[None, :], ACT)
        else:
            d = e

        # ---- projection: acc += d @ pw^T ----
        w_p = tl.load(PW_ptr + co[None, :] * PW_stride_o + mc[:, None] * PW_stride_i,
                      mask=mc_ok[:, None] & co_ok[None, :], other=0.0)  # [BLOCK_MC, BLOCK_CO] = pw^T
        acc = tl.dot(d.to(DT), w_p.to(DT), acc, input_precision="ieee")

    # ---- epilogue: bias, residual, store in y's layout ----
    pb = tl.load(PB_ptr + co, mask=co_ok, other=0.0).to(tl.float32)
    acc = acc + pb[None, :]
    mask = p_ok[:, None] & co_ok[None, :]
    if RESIDUAL:  # stride 1 and Cin == Cout: same coordinates in x
        res = tl.load(x_base + co[None, :] * X_stride_c + (oh * X_stride_h + ow * X_stride_w)[:, None],
                      mask=mask, other=0.0)
        acc = acc + res.to(tl.float32)
    tl.store(y_base + co[None, :] * Y_stride_c + (oh * Y_stride_h + ow * Y_stride_w)[:, None],
             acc.to(Y_ptr.dtype.element_ty), mask=mask)


def validate_uib(x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w, proj_b,
                 stride, residual, activation):
    """mnv4_kernels.validate's mirror of csrc/params.h (the same rules and messages as the C++ op and the
    fake kernel). Returns a dict of the derived sizes."""
    return validate.uib(x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w, proj_b, stride,
                        residual, activation)


def _w2(t):
    """(stride_out, stride_in) of a [out, in, 1, 1] or [out, in] 1x1 weight."""
    return t.stride(0), t.stride(1)


@triton_op("mnv4::uib_triton", mutates_args=())
def uib_triton(x: torch.Tensor, start_dw_w: torch.Tensor | None, start_dw_b: torch.Tensor | None,
               expand_w: torch.Tensor, expand_b: torch.Tensor, mid_dw_w: torch.Tensor | None,
               mid_dw_b: torch.Tensor | None, proj_w: torch.Tensor, proj_b: torch.Tensor, stride: int = 1,
               residual: bool = False, activation: str = "relu") -> torch.Tensor:
    """Triton mnv4::uib (see the module docstring); output layout follows x (output_memory_format)."""
    p = validate_uib(x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w, proj_b,
                     stride, residual, activation)
    check(_INTERPRET or x.device.type in ("cuda", "meta"),
          f"mnv4::uib_triton: x must be a CUDA tensor; got one on {x.device} (set TRITON_INTERPRET=1 before "
          "triton is imported to run the Triton kernels on CPU, in their interpreter)")
    y = torch.empty((p["batch"], p["cout"], p["oh"], p["ow"]), dtype=x.dtype, device=x.device,
                    memory_format=output_memory_format(x))
    if y.numel() == 0 or metadata_only(x, _INTERPRET):
        return y
    # Absent dw weights: pass a real tensor that the kernel never reads (KS/KM = 0 compile its use away).
    sw, sb = (start_dw_w, start_dw_b) if p["ks"] else (expand_b.view(-1, 1, 1, 1), expand_b)
    mw, mb = (mid_dw_w, mid_dw_b) if p["km"] else (expand_b.view(-1, 1, 1, 1), expand_b)
    km, s_mid = p["km"], p["s_mid"]
    oh, ow = p["oh"], p["ow"]

    def grid(meta):
        nth = triton.cdiv(oh, _out_tile(meta["RH"], km, s_mid))
        ntw = triton.cdiv(ow, _out_tile(meta["RW"], km, s_mid))
        return (p["batch"] * nth * ntw * triton.cdiv(p["cout"], meta["BLOCK_CO"]),)

    wrap_triton(_uib_kernel)[grid](
        x, *x.stride(),
        sw, sw.stride(0), sw.stride(2), sw.stride(3), sb,
        expand_w, *_w2(expand_w), expand_b,
        mw, mw.stride(0), mw.stride(2), mw.stride(3), mb,
        proj_w, *_w2(proj_w), proj_b,
        y, *y.stride(),
        p["cin"], p["mid"], p["cout"], p["h"], p["w"], p["eh"], p["ew"], oh, ow,
        CI_ALL=max(16, triton.next_power_of_2(p["cin"])),
        KS=p["ks"], S_START=p["s_start"], KM=km, S_MID=s_mid, ACT=p["act"], RESIDUAL=bool(residual),
        UPCAST_DOT=_INTERPRET and x.dtype == torch.bfloat16,
    )
    return y


keep_opaque_when_interpreted(uib_triton, _INTERPRET)
