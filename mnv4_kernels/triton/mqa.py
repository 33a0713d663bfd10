"""Fused Mobile MQA in two Triton kernels: `torch.ops.mnv4.mqa_triton`.

Same schema and semantics as `mnv4::mqa` (csrc/ops.cpp; oracle: mnv4_reference.functional.mqa). For an image
x [C, N = H*W] with h query heads, one shared K head and one shared V head:

    xn[c, n] = x[c, n] * norm_scale[c] + norm_shift[c]                      (pre-norm BatchNorm as an affine)
    k[m, :]  = k_w  dw_k(xn)[:, m],  v[m, :] = v_w dw_v(xn)[:, m]           (dw k x k, stride kv_stride, + bias,
                                                                             zero padding; identity if absent)
    q_i[n, :] = q_w[i*dk:(i+1)*dk] xn[:, n]                                 (head i)
    o_i[n, :] = sum_m softmax_m(q_i[n] . k[m] * dk^-0.5) v[m, :]
    out[:, n] = o_w [o_1[n]; ...; o_h[n]]  (+ x[:, n] if residual)          (channels head-major)

Kernels:
  1. `_mqa_kv_kernel`, grid (M tiles x batch): K [B, M, dk] and V [B, M, dv] once per image (the affine and the
     strided dw computed on the fly while loading the A tiles of the two projections). K/V are tiny (M <= 144
     pixels x 64 channels per image), so this round trip costs nothing next to recomputing them per query tile.
  2. `_mqa_attn_kernel`, grid (query-pixel tiles x batch): for BLOCK_P query pixels, ALL heads at once:
       q = xn_tile @ q_w^T as one [BLOCK_P, HP*DKP] dot (HP = heads rounded up to a power of two, DKP = dk
       rounded up), reshaped to rows = head x pixel [HP*BLOCK_P, DKP], so every head streams the one shared
       K/V head together: the K/V blocks are loaded once per tile, not once per head;
       online softmax over K/V blocks of BLOCK_M keys (running max subtracted, exp2 with dk^-0.5*log2(e)
       folded into q), o accumulated in fp32;
       o reshaped back to [BLOCK_P, HP*DVP] (pixel x (head, d), i.e. head-major channels), then the output
       projection o @ o_w^T per BLOCK_CO chunk and the residual, stored in x's layout.
     The output projection sums over heads; because the program holds every head of its pixels, it does it in
     the same kernel: o [B, N, h*dv] never goes to global memory and no second kernel is launched.

Numerics: fp32 accumulation everywhere; fp32 inputs use IEEE fp32 dots (no TF32). fp16/bf16 inputs feed tl.dot
in their own dtype (q, k, v, the probabilities and o rounded to it, as flash attention does) and accumulate in
fp32. K/V are stored in the dot dtype. Under TRITON_INTERPRET=1 the interpreter's bf16 tl.dot is wrong (it
multiplies raw uint16 bit patterns), so bf16 dots are upcast to fp32 there (UPCAST_DOT); on a GPU bf16 runs
natively.
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

__all__ = ["mqa_triton", "validate_mqa"]

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_LOG2E = 1.4426950408889634


# M = 49..144 K/V pixels per image (stride-2 K/V of 14x14..24x24 maps), C = 256..512.
KV_GPU_CONFIGS = [triton.Config(dict(BLOCK_M=bm, BLOCK_C=bc), num_warps=w, num_stages=2)
                  for bm, bc, w in [(16, 64, 4), (32, 32, 4), (32, 64, 4), (64, 32, 4), (64, 64, 8)]]

# N = 49..576 query pixels, M = 49..144 keys, dk = dv = 48/64 (DKP = 64), heads 4/8, C/Cout 256..512.
# Rows per program = HP * BLOCK_P (64..256); _attn_prune drops the configs whose row count is too large. The
# first is valid alone for up to 16 heads (MNV4_TRITON_ONE_CONFIG runs it unpruned).
ATTN_GPU_CONFIGS = [
    triton.Config(dict(BLOCK_P=bp, BLOCK_M=bm, BLOCK_C=bc, BLOCK_CO=bco), num_warps=w, num_stages=s)
    for bp, bm, bc, bco, w, s in [
        (16, 32, 32, 64, 4, 2),
        (16, 64, 32, 64, 4, 2),
        (16, 64, 64, 128, 8, 2),
        (16, 128, 32, 64, 8, 2),
        (32, 32, 32, 64, 4, 2),
        (32, 64, 32, 64, 8, 2),
        (32, 64, 64, 128, 8, 3),
        (64, 32, 32, 64, 8, 2),
    ]
]


def _kv_configs():
    if _INTERPRET:  # one small config (16 = tl.dot's GPU minimum), several M tiles and C chunks in the tests
        return [triton.Config(dict(BLOCK_M=16, BLOCK_C=16), num_warps=4, num_stages=1)]
    return gpu_configs(KV_GPU_CONFIGS)


def _attn_configs():
    if _INTERPRET:
        return [triton.Config(dict(BLOCK_P=16, BLOCK_M=16, BLOCK_C=16, BLOCK_CO=16), num_warps=4, num_stages=1)]
    return gpu_configs(ATTN_GPU_CONFIGS)


def _attn_prune(configs, named_args, **kwargs):
    """Keep rows (HP*BLOCK_P) <= 256 and key blocks no wider than M needs (16 minimum); drop duplicates.
    HP is a keyword argument of the launch: it arrives in kwargs, M and C_out in named_args (prune_args)."""
    a = prune_args(named_args, kwargs)
    hp = int(a["HP"])
    m_cap = max(16, triton.next_power_of_2(int(a["M"])))
    co_cap = max(16, triton.next_power_of_2(int(a["C_out"])))
    seen, out = set(), []
    for c in configs:
        kw = dict(c.kwargs)
        if hp * kw["BLOCK_P"] > 256:
            continue
        kw["BLOCK_M"] = min(kw["BLOCK_M"], m_cap)
        kw["BLOCK_CO"] = min(kw["BLOCK_CO"], co_cap)
        key = (tuple(sorted(kw.items())), c.num_warps, c.num_stages)
        if key not in seen:
            seen.add(key)
            out.append(triton.Config(kw, num_warps=c.num_warps, num_stages=c.num_stages))
    return out or [triton.Config(dict(BLOCK_P=16, BLOCK_M=min(32, m_cap), BLOCK_C=32, BLOCK_CO=64), num_warps=8)]


@triton.autotune(configs=_kv_configs(), key=["C", "M", "DK", "DV", "KK", "S_KV"])
@triton.jit
def _mqa_kv_kernel(
    X_ptr, X_stride_n, X_stride_c, X_stride_h, X_stride_w,
    NS_ptr, NB_ptr,
    KDW_ptr, KDW_stride_c, KDW_stride_h, KDW_stride_w, KDB_ptr,
    VDW_ptr, VDW_stride_c, VDW_stride_h, VDW_stride_w, VDB_ptr,
    KW_ptr, KW_stride_o, KW_stride_i,
    VW_ptr, VW_stride_o, VW_stride_i,
    K_ptr, V_ptr,  # [B, M, DK] and [B, M, DV], contiguous, in the dot dtype
    C, H, W, KVH, KVW, M, DK, DV,
    KK: tl.constexpr,  # K/V dw kernel size, 0 = K/V read xn directly: removes the dw code
    S_KV: tl.constexpr,  # K/V dw stride: index math folded at compile time
    DKP: tl.constexpr, DVP: tl.constexpr,  # dk, dv rounded up to powers of two (>= 16): dot N sizes
    UPCAST_DOT: tl.constexpr,  # dot in fp32 even for 16-bit inputs (interpreter's bf16 dot is wrong)
    BLOCK_M: tl.constexpr,  # K/V pixels per program: M of both dots
    BLOCK_C: tl.constexpr,  # input-channel chunk: K of both dots
):
    if UPCAST_DOT:  # DT: the dtype tl.dot's operands are cast to
        DT: tl.constexpr = tl.float32
    else:
        DT: tl.constexpr = X_ptr.dtype.element_ty
    n_m = tl.cdiv(M, BLOCK_M)
    pid = tl.program_id(0)  # one grid axis (axes 1-2 stop at 65535): pid = image * n_m + M tile
    pid_m = pid % n_m
    n = (pid // n_m).to(tl.int64)  # int64: n * X_stride_n overflows int32 for large batches
    x_base = X_ptr + n * X_stride_n

    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = m < M
    kh = m // KVW
    kw = m % KVW
    dk = tl.arange(0, DKP)
    dv = tl.arange(0, DVP)
    k_acc = tl.zeros((BLOCK_M, DKP), dtype=tl.float32)
    v_acc = tl.zeros((BLOCK_M, DVP), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_ok = c < C
        ns = tl.load(NS_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        nb = tl.load(NB_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        if KK > 0:
            ka = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
            va = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
            for a in range(KK):  # rows: a runtime loop (compile time); columns unrolled
                ih = kh * S_KV - KK // 2 + a
                for b in tl.static_range(KK):
                    iw = kw * S_KV - KK // 2 + b
                    ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                    msk = ok[:, None] & c_ok[None, :]
                    xv = tl.load(x_base + c[None, :] * X_stride_c + (ih * X_stride_h + iw * X_stride_w)[:, None],
                                 mask=msk, other=0.0).to(tl.float32)
                    xn = tl.where(msk, xv * ns[None, :] + nb[None, :], 0.0)  # the dw pads xn with zeros
                    wk = tl.load(KDW_ptr + c * KDW_stride_c + a * KDW_stride_h + b * KDW_stride_w,
                                 mask=c_ok, other=0.0).to(tl.float32)
                    wv = tl.load(VDW_ptr + c * VDW_stride_c + a * VDW_stride_h + b * VDW_stride_w,
                                 mask=c_ok, other=0.0).to(tl.float32)
                    ka += xn * wk[None, :]
                    va += xn * wv[None, :]
            ka += tl.load(KDB_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
            va += tl.load(VDB_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        else:
            xv = tl.load(x_base + c[None, :] * X_stride_c + (kh * X_stride_h + kw * X_stride_w)[:, None],
                         mask=m_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
            ka = xv * ns[None, :] + nb[None, :]
            va = ka
        w_k = tl.load(KW_ptr + dk[None, :] * KW_stride_o + c[:, None] * KW_stride_i,
                      mask=c_ok[:, None] & (dk < DK)[None, :], other=0.0)  # [BLOCK_C, DKP] = k_w^T
        w_v = tl.load(VW_ptr + dv[None, :] * VW_stride_o + c[:, None] * VW_stride_i,
                      mask=c_ok[:, None] & (dv < DV)[None, :], other=0.0)  # [BLOCK_C, DVP] = v_w^T
        k_acc = tl.dot(ka.to(DT), w_k.to(DT), k_acc, input_precision="ieee")
        v_acc = tl.dot(va.to(DT), w_v.to(DT), v_acc, input_precision="ieee")
    row = n * M + m  # int64
    tl.store(K_ptr + row[:, None] * DK + dk[None, :], k_acc.to(K_ptr.dtype.element_ty),
             mask=m_ok[:, None] & (dk < DK)[None, :])
    tl.store(V_ptr + row[:, None] * DV + dv[None, :], v_acc.to(V_ptr.dtype.element_ty),
             mask=m_ok[:, None] & (dv < DV)[None, :])


@triton.autotune(configs=_attn_configs(), key=["C", "C_out", "N", "M", "DK", "DV", "HP"],
                 prune_configs_by={"early_config_prune": _attn_prune})
@triton.jit
def _mqa_attn_kernel(
    X_ptr, X_stride_n, X_stride_c, X_stride_h, X_stride_w,
    NS_ptr, NB_ptr,
    QW_ptr, QW_stride_o, QW_stride_i,
    OW_ptr, OW_stride_o, OW_stride_i,
    K_ptr, V_ptr,  # [B, M, DK], [B, M, DV] from _mqa_kv_kernel
    Y_ptr, Y_stride_n, Y_stride_c, Y_stride_h, Y_stride_w,
    C, C_out, W, N, M, NH, DK, DV, qk_scale,  # qk_scale = dk^-0.5 * log2(e) (softmax in base 2)
    HP: tl.constexpr,  # heads rounded up to a power of two: heads become a reshape dimension
    DKP: tl.constexpr, DVP: tl.constexpr,  # dk, dv rounded up to powers of two (>= 16)
    RESIDUAL: tl.constexpr,  # add x in the epilogue: removes a load when off
    UPCAST_DOT: tl.constexpr,  # dot in fp32 even for 16-bit inputs (interpreter's bf16 dot is wrong)
    BLOCK_P: tl.constexpr,  # query pixels per program (x HP heads = the attention rows)
    BLOCK_M: tl.constexpr,  # keys per online-softmax step
    BLOCK_C: tl.constexpr,  # input-channel chunk of the q projection
    BLOCK_CO: tl.constexpr,  # output-channel chunk of the output projection
):
    if UPCAST_DOT:  # DT: the dtype tl.dot's operands are cast to
        DT: tl.constexpr = tl.float32
    else:
        DT: tl.constexpr = X_ptr.dtype.element_ty
    n_p = tl.cdiv(N, BLOCK_P)
    pid = tl.program_id(0)  # one grid axis (axes 1-2 stop at 65535): pid = image * n_p + pixel tile
    pid_p = pid % n_p
    n = (pid // n_p).to(tl.int64)  # int64: n * X_stride_n and n * M * DK overflow int32 at large batch
    x_base = X_ptr + n * X_stride_n
    y_base = Y_ptr + n * Y_stride_n

    pix = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pix_ok = pix < N
    pix_off = (pix // W) * X_stride_h + (pix % W) * X_stride_w
    pix_off_y = (pix // W) * Y_stride_h + (pix % W) * Y_stride_w

    # ---- q for all heads: [BLOCK_P, HP*DKP], column j = (head j // DKP, dim j % DKP) ----
    j = tl.arange(0, HP * DKP)
    j_head = j // DKP
    j_d = j % DKP
    j_ok = (j_head < NH) & (j_d < DK)
    q = tl.zeros((BLOCK_P, HP * DKP), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_ok = c < C
        ns = tl.load(NS_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        nb = tl.load(NB_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        xv = tl.load(x_base + c[None, :] * X_stride_c + pix_off[:, None],
                     mask=pix_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
        xn = xv * ns[None, :] + nb[None, :]
        w_q = tl.load(QW_ptr + (j_head * DK + j_d)[None, :] * QW_stride_o + c[:, None] * QW_stride_i,
                      mask=c_ok[:, None] & j_ok[None, :], other=0.0)  # [BLOCK_C, HP*DKP] = q_w^T
        q = tl.dot(xn.to(DT), w_q.to(DT), q, input_precision="ieee")
    q = q * qk_scale
    # rows = head x pixel: every head of the tile shares each K/V block below
    q = tl.reshape(tl.permute(tl.reshape(q, (BLOCK_P, HP, DKP)), (1, 0, 2)), (HP * BLOCK_P, DKP)).to(DT)

    # ---- online softmax over the shared K/V head ----
    dk = tl.arange(0, DKP)
    dv = tl.arange(0, DVP)
    m_i = tl.full((HP * BLOCK_P,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((HP * BLOCK_P,), dtype=tl.float32)
    o = tl.zeros((HP * BLOCK_P, DVP), dtype=tl.float32)
    kv_row0 = n * M
    for m0 in range(0, M, BLOCK_M):
        mm = m0 + tl.arange(0, BLOCK_M)
        mm_ok = mm < M
        kt = tl.load(K_ptr + (kv_row0 + mm)[None, :] * DK + dk[:, None],
                     mask=(dk < DK)[:, None] & mm_ok[None, :], other=0.0)  # [DKP, BLOCK_M] = k^T
        s = tl.dot(q, kt.to(DT), input_precision="ieee")  # [HP*BLOCK_P, BLOCK_M], log2 units
        s = tl.where(mm_ok[None, :], s, float("-inf"))
        # Finite (every block holds at least one real key) unless a score is NaN. Then, whether a max drops
        # NaN (maxnumf, the GPU default) or keeps it, pr, l_i and so the row's output are NaN, as in the
        # composite's softmax.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        pr = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(pr, 1)
        vb = tl.load(V_ptr + (kv_row0 + mm)[:, None] * DV + dv[None, :],
                     mask=mm_ok[:, None] & (dv < DV)[None, :], other=0.0)  # [BLOCK_M, DVP]
        o = tl.dot(pr.to(DT), vb.to(DT), o * alpha[:, None], input_precision="ieee")
        m_i = m_new
    o = o / l_i[:, None]
    # back to pixel x (head, d): head-major channels, as o_w expects
    o = tl.reshape(tl.permute(tl.reshape(o, (HP, BLOCK_P, DVP)), (1, 0, 2)), (BLOCK_P, HP * DVP)).to(DT)

    # ---- output projection over all heads + residual, per BLOCK_CO chunk ----
    jv = tl.arange(0, HP * DVP)
    jv_head = jv // DVP
    jv_d = jv % DVP
    jv_ok = (jv_head < NH) & (jv_d < DV)
    for co0 in range(0, C_out, BLOCK_CO):
        co = co0 + tl.arange(0, BLOCK_CO)
        co_ok = co < C_out
        w_o = tl.load(OW_ptr + co[None, :] * OW_stride_o + (jv_head * DV + jv_d)[:, None] * OW_stride_i,
                      mask=jv_ok[:, None] & co_ok[None, :], other=0.0)  # [HP*DVP, BLOCK_CO] = o_w^T
        out = tl.dot(o, w_o.to(DT), input_precision="ieee")
        mask = pix_ok[:, None] & co_ok[None, :]
        if RESIDUAL:
            res = tl.load(x_base + co[None, :] * X_stride_c + pix_off[:, None], mask=mask, other=0.0)
            out = out + res.to(tl.float32)
        tl.store(y_base + co[None, :] * Y_stride_c + pix_off_y[:, None], out.to(Y_ptr.dtype.element_ty),
                 mask=mask)


def validate_mqa(x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w, num_heads,
                 kv_stride, residual):
    """mnv4_kernels.validate's mirror of csrc/params.h (the same rules and messages as the C++ op and the
    fake kernel). Returns a dict of the derived sizes."""
    return validate.mqa(x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w, num_heads,
                        kv_stride, residual)


def _p2(n):
    return max(16, triton.next_power_of_2(int(n)))


@triton_op("mnv4::mqa_triton", mutates_args=())
def mqa_triton(x: torch.Tensor, norm_scale: torch.Tensor, norm_shift: torch.Tensor, q_w: torch.Tensor,
               k_dw_w: torch.Tensor | None, k_dw_b: torch.Tensor | None, k_w: torch.Tensor,
               v_dw_w: torch.Tensor | None, v_dw_b: torch.Tensor | None, v_w: torch.Tensor, o_w: torch.Tensor,
               num_heads: int, kv_stride: int = 1, residual: bool = True) -> torch.Tensor:
    """Triton mnv4::mqa (see the module docstring); output layout follows x (output_memory_format)."""
    p = validate_mqa(x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w, num_heads,
                     kv_stride, residual)
    check(_INTERPRET or x.device.type in ("cuda", "meta"),
          f"mnv4::mqa_triton: x must be a CUDA tensor; got one on {x.device} (set TRITON_INTERPRET=1 before "
          "triton is imported to run the Triton kernels on CPU, in their interpreter)")
    y = torch.empty((p["batch"], p["cout"], p["h"], p["w"]), dtype=x.dtype, device=x.device,
                    memory_format=output_memory_format(x))
    if y.numel() == 0 or metadata_only(x, _INTERPRET):
        return y
    upcast = _INTERPRET and x.dtype == torch.bfloat16
    kv_dtype = torch.float32 if upcast else x.dtype
    B, M, N = p["batch"], p["kvh"] * p["kvw"], p["h"] * p["w"]
    dk, dv, dkp, dvp = p["dk"], p["dv"], _p2(p["dk"]), _p2(p["dv"])
    k = torch.empty((B, M, dk), dtype=kv_dtype, device=x.device)
    v = torch.empty((B, M, dv), dtype=kv_dtype, device=x.device)
    # Absent dw weights: pass a real tensor that the kernel never reads (KK = 0 compiles its use away).
    kdw, kdb = (k_dw_w, k_dw_b) if p["kk"] else (norm_scale.view(-1, 1, 1, 1), norm_scale)
    vdw, vdb = (v_dw_w, v_dw_b) if p["kk"] else (norm_scale.view(-1, 1, 1, 1), norm_scale)

    wrap_triton(_mqa_kv_kernel)[lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * B,)](
        x, *x.stride(), norm_scale, norm_shift,
        kdw, kdw.stride(0), kdw.stride(2), kdw.stride(3), kdb,
        vdw, vdw.stride(0), vdw.stride(2), vdw.stride(3), vdb,
        k_w, k_w.stride(0), k_w.stride(1),
        v_w, v_w.stride(0), v_w.stride(1),
        k, v,
        p["c"], p["h"], p["w"], p["kvh"], p["kvw"], M, dk, dv,
        KK=p["kk"], S_KV=kv_stride, DKP=dkp, DVP=dvp, UPCAST_DOT=upcast,
    )
    wrap_triton(_mqa_attn_kernel)[lambda meta: (triton.cdiv(N, meta["BLOCK_P"]) * B,)](
        x, *x.stride(), norm_scale, norm_shift,
        q_w, q_w.stride(0), q_w.stride(1),
        o_w, o_w.stride(0), o_w.stride(1),
        k, v,
        y, *y.stride(),
        p["c"], p["cout"], p["w"], N, M, num_heads, dk, dv, dk ** -0.5 * _LOG2E,
        HP=triton.next_power_of_2(num_heads), DKP=dkp, DVP=dvp, RESIDUAL=bool(residual), UPCAST_DOT=upcast,
    )
    return y


keep_opaque_when_interpreted(mqa_triton, _INTERPRET)
