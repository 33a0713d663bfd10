// mnv4::mqa on CUDA (device code; also compiled for the CPU emulator in tests), two kernels on the current
// stream:
//
// 1. mqa_kv_kernel: once per image, for a tile of TP K/V pixels: xn = x * norm_scale + norm_shift, the
//    strided k x k dw convs for K and V (+ bias; zero padding applies to xn) or xn itself, then the 1x1
//    projections k_w / v_w in fp32 -> workspace K [B, M, dk] and V [B, M, dv] (fp32, tiny: M = KH * KW).
// 2. mqa_attn_kernel: a CTA owns TQ query pixels of one image:
//      Xn [TQ x C] (dtype T, smem) -> Q = Xn q_w^T in NB-column chunks (tensor cores for fp16/bf16 via WMMA,
//      fp32 FMA for fp32) -> attention for all heads at once (rows = (pixel, head), one shared K/V), K/V
//      streamed in KC-key chunks with an online softmax (scale dk^-0.5), fp32 throughout -> O [TQ x h*dv]
//      (dtype T, smem) -> out = O o_w^T (+ x) in NB-column chunks, written through out's strides.
// x is read through its strides (channels_last native, NCHW and non-contiguous in place); the output has
// x's memory format. Everything accumulates in fp32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/common.cuh"

namespace mnv4 {
namespace cuda {

struct MqaKvArgs {
  const void* x;
  int64_t xs[4];
  const void *scale, *shift, *kdw, *kdb, *vdw, *vdb;  // dw weights [C][kk*kk] (null when absent)
  const float *kwt, *vwt;                              // k_w^T [C][dk], v_w^T [C][dv], fp32
  float *K, *V;                                        // [B][M][dk], [B][M][dv]
  int c, h, w, kh, kw, m, dk, dv, kk, kvs, tp, tiles_per_img;
};

template <typename T, int KK>
__device__ __forceinline__ void kv_dw(const T* __restrict__ xc, int64_t sh, int64_t sw, float sc, float sf, int iy0,
                                      int ix0, int h, int w, const T* __restrict__ wk, const T* __restrict__ wv,
                                      int kk_rt, float& ak, float& av) {
  const int kk = KK > 0 ? KK : kk_rt;
#pragma unroll
  for (int dy = 0; dy < kk; ++dy) {
    const int iy = iy0 + dy;
    if (iy < 0 || iy >= h) continue;
#pragma unroll
    for (int dx = 0; dx < kk; ++dx) {
      const int ix = ix0 + dx;
      if (ix < 0 || ix >= w) continue;
      const float xn = fmaf(to_f(xc[iy * sh + ix * sw]), sc, sf);
      ak = fmaf(xn, to_f(wk[dy * kk + dx]), ak);
      av = fmaf(xn, to_f(wv[dy * kk + dx]), av);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) mqa_kv_kernel(const MqaKvArgs a) {
  MNV4_DYNAMIC_SMEM(smem);
  float* kin = reinterpret_cast<float*>(smem);  // [tp][c]
  float* vin = kin + a.tp * a.c;                 // [tp][c]
  const int n = blockIdx.x / a.tiles_per_img;
  const int j0 = (blockIdx.x % a.tiles_per_img) * a.tp;
  const T* __restrict__ x = static_cast<const T*>(a.x) + static_cast<int64_t>(n) * a.xs[0];
  const T* scale = static_cast<const T*>(a.scale);
  const T* shift = static_cast<const T*>(a.shift);

  for (int i = threadIdx.x; i < a.tp * a.c; i += kThreads) {
    const int p = i / a.c, c = i % a.c;
    const int j = j0 + p;
    float kv = 0.f, vv = 0.f;
    if (j < a.m) {
      const int ky = j / a.kw, kx = j % a.kw;
      const float sc = to_f(scale[c]), sf = to_f(shift[c]);
      const T* xc = x + c * a.xs[1];
      if (a.kk) {
        const T* wk = static_cast<const T*>(a.kdw) + c * a.kk * a.kk;
        const T* wv = static_cast<const T*>(a.vdw) + c * a.kk * a.kk;
        const int iy0 = ky * a.kvs - a.kk / 2, ix0 = kx * a.kvs - a.kk / 2;
        switch (a.kk) {
          case 3: kv_dw<T, 3>(xc, a.xs[2], a.xs[3], sc, sf, iy0, ix0, a.h, a.w, wk, wv, 3, kv, vv); break;
          default: kv_dw<T, 0>(xc, a.xs[2], a.xs[3], sc, sf, iy0, ix0, a.h, a.w, wk, wv, a.kk, kv, vv); break;
        }
        kv += to_f(static_cast<const T*>(a.kdb)[c]);
        vv += to_f(static_cast<const T*>(a.vdb)[c]);
      } else {  // kv_stride == 1 (checked): the K/V grid is x's grid
        kv = vv = fmaf(to_f(xc[ky * a.xs[2] + kx * a.xs[3]]), sc, sf);
      }
    }
    kin[i] = kv;
    vin[i] = vv;
  }
  __syncthreads();
  const int64_t base = static_cast<int64_t>(n) * a.m;
  for (int i = threadIdx.x; i < a.tp * a.dk; i += kThreads) {
    const int p = i / a.dk, d = i % a.dk;
    if (j0 + p >= a.m) continue;
    float s = 0.f;
    for (int c = 0; c < a.c; ++c) s = fmaf(kin[p * a.c + c], a.kwt[c * a.dk + d], s);
    a.K[(base + j0 + p) * a.dk + d] = s;
  }
  for (int i = threadIdx.x; i < a.tp * a.dv; i += kThreads) {
    const int p = i / a.dv, d = i % a.dv;
    if (j0 + p >= a.m) continue;
    float s = 0.f;
    for (int c = 0; c < a.c; ++c) s = fmaf(vin[p * a.c + c], a.vwt[c * a.dv + d], s);
    a.V[(base + j0 + p) * a.dv + d] = s;
  }
}

struct MqaAttnArgs {
  const void* x;
  void* out;
  int64_t xs[4], os[4];
  const void *scale, *shift, *qw, *ow;  // q_w [QW][C], o_w [Cout][HDV], contiguous, dtype T
  const float *K, *V;
  int c, h, w, hw, m, heads, dk, dv, qw_n, hdv, cout, residual;
  float qscale;
  int tq, tqp, nb, kc, r, tiles_per_img;
  int cp, hdvp, qwc;
  int lda, ldb, ldq, ldo, ldout, ldk, lds;
  int64_t off_a, off_b, off_q, off_k, off_v, off_s, off_ml, off_o, off_out, smem;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) mqa_attn_kernel(const MqaAttnArgs a) {
  MNV4_DYNAMIC_SMEM(smem);
  T* sA = reinterpret_cast<T*>(smem + a.off_a);               // [tqp][lda]: Xn, later O (dtype T)
  T* sB = reinterpret_cast<T*>(smem + a.off_b);               // [nb][ldb]: weight chunk (col-major B)
  float* sQ = reinterpret_cast<float*>(smem + a.off_q);       // [tqp][ldq]
  float* sK = reinterpret_cast<float*>(smem + a.off_k);       // [kc][ldk]
  float* sV = reinterpret_cast<float*>(smem + a.off_v);       // [kc][dv]
  float* sS = reinterpret_cast<float*>(smem + a.off_s);       // [r][lds] scores / probabilities
  float* sMax = reinterpret_cast<float*>(smem + a.off_ml);    // [r]
  float* sSum = sMax + a.r;                                   // [r]
  float* sAlpha = sSum + a.r;                                 // [r]
  float* sO = reinterpret_cast<float*>(smem + a.off_o);       // [tqp][ldo] fp32 attention output
  float* sOut = reinterpret_cast<float*>(smem + a.off_out);   // [tqp][ldout] output chunk

  const int tid = threadIdx.x;
  const int n = blockIdx.x / a.tiles_per_img;
  const int q0 = (blockIdx.x % a.tiles_per_img) * a.tq;
  const T* __restrict__ x = static_cast<const T*>(a.x) + static_cast<int64_t>(n) * a.xs[0];
  const T* __restrict__ scale = static_cast<const T*>(a.scale);
  const T* __restrict__ shift = static_cast<const T*>(a.shift);
  const T* __restrict__ qw = static_cast<const T*>(a.qw);
  const T* __restrict__ ow = static_cast<const T*>(a.ow);
  const float* __restrict__ K = a.K + static_cast<int64_t>(n) * a.m * a.dk;
  const float* __restrict__ V = a.V + static_cast<int64_t>(n) * a.m * a.dv;

  // Xn tile; zero the attention state.
  for (int i = tid; i < a.tqp * a.cp; i += kThreads) {
    const int p = i / a.cp, c = i % a.cp;
    const int q = q0 + p;
    float v = 0.f;
    if (p < a.tq && q < a.hw && c < a.c) {
      const int y = q / a.w, xx = q % a.w;
      v = fmaf(to_f(x[c * a.xs[1] + y * a.xs[2] + xx * a.xs[3]]), to_f(scale[c]), to_f(shift[c]));
    }
    sA[p * a.lda + c] = from_f<T>(v);
  }
  for (int i = tid; i < a.tqp * a.ldo; i += kThreads) sO[i] = 0.f;
  for (int i = tid; i < a.r; i += kThreads) {
    sMax[i] = -INFINITY;
    sSum[i] = 0.f;
  }

  // Q = Xn q_w^T, NB output columns at a time.
  for (int n0 = 0; n0 < a.qw_n; n0 += a.nb) {
    for (int i = tid; i < a.nb * a.cp; i += kThreads) {
      const int jj = i / a.cp, c = i % a.cp;
      const int o = n0 + jj;
      sB[jj * a.ldb + c] = (o < a.qw_n && c < a.c) ? qw[static_cast<int64_t>(o) * a.c + c] : from_f<T>(0.f);
    }
    __syncthreads();
    block_gemm<T>(sA, a.lda, sB, a.ldb, sQ + n0, a.ldq, a.tqp, a.nb, a.cp, false);
    __syncthreads();
  }

  // Attention over the shared K/V, KC keys at a time, online softmax per (pixel, head) row.
  for (int j0 = 0; j0 < a.m; j0 += a.kc) {
    for (int i = tid; i < a.kc * a.dk; i += kThreads) {
      const int jj = i / a.dk, d = i % a.dk;
      sK[jj * a.ldk + d] = (j0 + jj < a.m) ? K[static_cast<int64_t>(j0 + jj) * a.dk + d] : 0.f;
    }
    for (int i = tid; i < a.kc * a.dv; i += kThreads) {
      const int jj = i / a.dv, d = i % a.dv;
      sV[i] = (j0 + jj < a.m) ? V[static_cast<int64_t>(j0 + jj) * a.dv + d] : 0.f;
    }
    __syncthreads();
    for (int i = tid; i < a.r * a.kc; i += kThreads) {
      const int r = i / a.kc, jj = i % a.kc;
      const int p = r / a.heads, hd = r % a.heads;
      float s = -INFINITY;
      if (j0 + jj < a.m) {
        const float* qp = sQ + p * a.ldq + hd * a.dk;
        const float* kp = sK + jj * a.ldk;
        float acc = 0.f;
        for (int d = 0; d < a.dk; ++d) acc = fmaf(qp[d], kp[d], acc);
        s = acc * a.qscale;
      }
      sS[r * a.lds + jj] = s;
    }
    __syncthreads();
    const int kn = min(a.kc, a.m - j0);  // valid keys in this chunk (>= 1)
    for (int r = tid; r < a.r; r += kThreads) {
      float* srow = sS + r * a.lds;
      const float mold = sMax[r];
      float mnew = mold;
      // fmaxf skips a NaN score; the row still ends NaN, as the composite's softmax does: exp(NaN - mnew) is
      // NaN and so are the row's sum and output (all-NaN chunk: mnew stays -inf, alpha = exp(NaN) = NaN).
      for (int jj = 0; jj < kn; ++jj) mnew = fmaxf(mnew, srow[jj]);
      const float alpha = expf(mold - mnew);  // 0 on the first chunk (mold = -inf, mnew finite)
      float sum = 0.f;
      for (int jj = 0; jj < kn; ++jj) {
        const float e = expf(srow[jj] - mnew);
        srow[jj] = e;
        sum += e;
      }
      for (int jj = kn; jj < a.kc; ++jj) srow[jj] = 0.f;
      sMax[r] = mnew;
      sSum[r] = sSum[r] * alpha + sum;
      sAlpha[r] = alpha;
    }
    __syncthreads();
    for (int i = tid; i < a.r * a.dv; i += kThreads) {
      const int r = i / a.dv, d = i % a.dv;
      const int p = r / a.heads, hd = r % a.heads;
      float* op = sO + p * a.ldo + hd * a.dv + d;
      const float* prow = sS + r * a.lds;
      float acc = *op * sAlpha[r];
      for (int jj = 0; jj < kn; ++jj) acc = fmaf(prow[jj], sV[jj * a.dv + d], acc);
      *op = acc;
    }
    __syncthreads();
  }

  // O = attention output / row sums, as the dtype-T operand of the output projection (overwrites Xn).
  for (int i = tid; i < a.tqp * a.hdvp; i += kThreads) {
    const int p = i / a.hdvp, cc = i % a.hdvp;
    float v = 0.f;
    if (p < a.tq && cc < a.hdv) v = sO[p * a.ldo + cc] / sSum[p * a.heads + cc / a.dv];
    sA[p * a.lda + cc] = from_f<T>(v);
  }

  // out = O o_w^T (+ x), NB output channels at a time.
  T* __restrict__ out = static_cast<T*>(a.out) + static_cast<int64_t>(n) * a.os[0];
  for (int n0 = 0; n0 < a.cout; n0 += a.nb) {
    for (int i = tid; i < a.nb * a.hdvp; i += kThreads) {
      const int jj = i / a.hdvp, cc = i % a.hdvp;
      const int o = n0 + jj;
      sB[jj * a.ldb + cc] = (o < a.cout && cc < a.hdv) ? ow[static_cast<int64_t>(o) * a.hdv + cc] : from_f<T>(0.f);
    }
    __syncthreads();  // also orders the O conversion above before the first GEMM
    block_gemm<T>(sA, a.lda, sB, a.ldb, sOut, a.ldout, a.tqp, a.nb, a.hdvp, false);
    __syncthreads();
    for (int i = tid; i < a.tq * a.nb; i += kThreads) {
      const int p = i / a.nb, jj = i % a.nb;
      const int q = q0 + p, co = n0 + jj;
      if (q >= a.hw || co >= a.cout) continue;
      const int y = q / a.w, xx = q % a.w;
      float v = sOut[p * a.ldout + jj];
      if (a.residual) v += to_f(x[co * a.xs[1] + y * a.xs[2] + xx * a.xs[3]]);
      out[co * a.os[1] + y * a.os[2] + xx * a.os[3]] = from_f<T>(v);
    }
    // The next iteration's weight load writes sB only; its __syncthreads precedes the next write of sOut.
  }
}

template <typename T>
int64_t plan_attn(MqaAttnArgs& a, int tq, int nb, int kc) {
  a.tq = tq;
  a.tqp = round_up(tq, gemm_pad<T>());
  a.nb = nb;
  a.kc = kc;
  a.r = tq * a.heads;
  a.tiles_per_img = (a.hw + tq - 1) / tq;
  a.cp = round_up(a.c, gemm_pad<T>());
  a.hdvp = round_up(a.hdv, gemm_pad<T>());
  a.qwc = round_up(a.qw_n, nb);
  const int kap = std::max(a.cp, a.hdvp);
  a.lda = ld_op<T>(kap);
  a.ldb = ld_op<T>(kap);
  a.ldq = ld_acc(a.qwc);
  a.ldo = ld_acc(a.hdvp);
  a.ldout = ld_acc(nb);
  a.ldk = a.dk + 1;
  a.lds = kc + 1;
  const int64_t t = sizeof(T);
  SmemCarver c;
  a.off_a = c.take(int64_t(a.tqp) * a.lda * t);
  a.off_b = c.take(int64_t(nb) * a.ldb * t);
  a.off_q = c.take(int64_t(a.tqp) * a.ldq * 4);
  a.off_k = c.take(int64_t(kc) * a.ldk * 4);
  a.off_v = c.take(int64_t(kc) * a.dv * 4);
  a.off_s = c.take(int64_t(a.r) * a.lds * 4);
  a.off_ml = c.take(int64_t(3) * a.r * 4);
  a.off_o = c.take(int64_t(a.tqp) * a.ldo * 4);
  a.off_out = c.take(int64_t(a.tqp) * a.ldout * 4);
  a.smem = c.bytes;
  return a.smem;
}

// K/V pixels per CTA of mqa_kv_kernel: up to 16, as many as fit in 48 KiB of fp32 staging ([tp][C] twice).
inline int kv_tile_pixels(int64_t m, int64_t c) {
  return int(std::max<int64_t>(1, std::min<int64_t>({16, m, (48 * 1024) / (8 * c)})));
}

// Picks the first (query tile, weight chunk, key chunk) plan that fits in `limit` bytes of shared memory.
template <typename T>
inline bool choose_attn_plan(MqaAttnArgs& a, int64_t limit) {
  static constexpr int kPlans[][3] = {{16, 64, 64}, {16, 64, 32}, {16, 32, 32}, {16, 16, 32},
                                      {8, 16, 32},  {8, 16, 16},  {4, 16, 16},  {1, 16, 16}};
  for (const auto& pl : kPlans)
    if (plan_attn<T>(a, std::min<int>(pl[0], a.hw), pl[1], pl[2]) <= limit) return true;
  return false;
}

}  // namespace cuda
}  // namespace mnv4
