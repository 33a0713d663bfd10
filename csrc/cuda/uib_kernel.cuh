// mnv4::uib on CUDA, the device code (also compiled for the CPU emulator in tests): the whole Universal
// Inverted Bottleneck in one kernel, tile-wise.
//
// A CTA (256 threads) owns a TOH x TOW tile of output pixels of one image and computes, for all Cout:
//   1. A  = start dw (k_s x k_s, no act) of x over the "expansion region" E (the tile plus the mid dw's halo,
//           in the grid the expansion runs on), straight from global memory through x's strides (any layout:
//           channels_last is the native, coalesced one; NCHW and non-contiguous inputs are read in place);
//           without a start dw, A = x over E.                                              -> smem, dtype T
//   then for each chunk of MC expanded channels (mid up to 2048 never has to fit at once):
//   2. H  = act(A * We^T + be) on tensor cores (fp16/bf16, fp32 accumulate) or fp32 FMA (fp32),
//           zeroed outside the image (the mid dw's zero padding)                          -> smem, fp32
//   3. G  = act(mid dw (k_m x k_m, stride s) of H + bm); without a mid dw, G = H        -> smem, dtype T
//   4. Acc += G * Wp^T (projection, accumulated over the chunks)                           -> smem, fp32
//   5. out = Acc + bp (+ x) written through out's strides (same memory format as x).
// The expanded tensor never leaves shared memory. The tile size and MC are chosen on the host as the
// largest that fit the device's shared memory (see plan_uib); the smem budget per CTA is printed in the
// error when even a 1x1 tile does not fit.
//
// Templates: T (float / __half / __nv_bfloat16) and ACT (none / relu / gelu) are compile-time; the dw kernel
// sizes 3 and 5 are compile-time specialisations picked by a block-uniform switch (any other odd k takes a
// generic loop); stride and form (which dw convs exist) are block-uniform runtime values.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/common.cuh"

namespace mnv4 {
namespace cuda {

struct UibArgs {
  const void* x;
  void* out;
  const void *sw, *sb, *ew, *eb, *mw, *mb, *pw, *pb;  // weights, contiguous; sw/sb/mw/mb null when absent
  int64_t xs[4], os[4];                               // strides (elements) of x and out: n, c, h, w
  int batch, cin, h, w, mid, cout, oh, ow;
  int ks, km;      // start / mid dw kernel sizes, 0 when absent
  int ss, s;       // start dw stride, block stride (on the mid dw when it exists)
  int residual;
  int eg_h, eg_w;  // the grid the expansion runs on: H x W with a mid dw, OH x OW without
  // tiling
  int toh, tow, tiles_w, tiles_per_img, mc;
  int eh, ew_, ep, epp, top, topp, cinp, coutp;
  int lda, ldbe, ldbp, ldh, ldg, ldacc;
  int64_t off_a, off_be, off_bp, off_h, off_g, off_acc, smem;
};

// Sum over a k x k window of x (one channel) at input rows/cols iy0.., ix0.., zero outside the image.
template <typename T, int K>
__device__ __forceinline__ float dw_x(const T* __restrict__ xc, int64_t sh, int64_t sw, int iy0, int ix0, int h,
                                      int w, const T* __restrict__ wk, int k_rt) {
  const int k = K > 0 ? K : k_rt;
  float acc = 0.f;
#pragma unroll
  for (int dy = 0; dy < k; ++dy) {
    const int iy = iy0 + dy;
    if (iy < 0 || iy >= h) continue;
#pragma unroll
    for (int dx = 0; dx < k; ++dx) {
      const int ix = ix0 + dx;
      if (ix < 0 || ix >= w) continue;
      acc = fmaf(to_f(xc[iy * sh + ix * sw]), to_f(wk[dy * k + dx]), acc);
    }
  }
  return acc;
}

// Sum over a k x k window of the fp32 expanded tile H (rows of ew pixels, ld floats per pixel).
template <typename T, int K>
__device__ __forceinline__ float dw_h(const float* __restrict__ hp, int ew, int ld, const T* __restrict__ wk,
                                      int k_rt) {
  const int k = K > 0 ? K : k_rt;
  float acc = 0.f;
#pragma unroll
  for (int dy = 0; dy < k; ++dy)
#pragma unroll
    for (int dx = 0; dx < k; ++dx) acc = fmaf(hp[(dy * ew + dx) * ld], to_f(wk[dy * k + dx]), acc);
  return acc;
}

template <typename T, int ACT>
__global__ void __launch_bounds__(kThreads) uib_kernel(const UibArgs a) {
  MNV4_DYNAMIC_SMEM(smem);
  T* sA = reinterpret_cast<T*>(smem + a.off_a);        // [epp][lda]   start-dw output / input over E
  T* sBe = reinterpret_cast<T*>(smem + a.off_be);      // [mc][ldbe]   expand weight chunk (col-major B)
  T* sBp = reinterpret_cast<T*>(smem + a.off_bp);      // [coutp][ldbp] proj weight chunk (col-major B)
  float* sH = reinterpret_cast<float*>(smem + a.off_h);  // [epp][ldh]  expanded chunk
  T* sG = reinterpret_cast<T*>(smem + a.off_g);        // [topp][ldg]  mid-dw output chunk
  float* sAcc = reinterpret_cast<float*>(smem + a.off_acc);  // [topp][ldacc] projection accumulator

  const int tid = threadIdx.x;
  const int n = blockIdx.x / a.tiles_per_img;
  const int t = blockIdx.x % a.tiles_per_img;
  const int oy0 = (t / a.tiles_w) * a.toh, ox0 = (t % a.tiles_w) * a.tow;
  // Origin of E in the expansion grid, and of the start dw's input window.
  const int ey0 = a.km ? oy0 * a.s - a.km / 2 : oy0;
  const int ex0 = a.km ? ox0 * a.s - a.km / 2 : ox0;

  const T* __restrict__ x = static_cast<const T*>(a.x) + static_cast<int64_t>(n) * a.xs[0];
  const T* __restrict__ sw = static_cast<const T*>(a.sw);
  const T* __restrict__ sb = static_cast<const T*>(a.sb);
  const T* __restrict__ ew = static_cast<const T*>(a.ew);
  const T* __restrict__ eb = static_cast<const T*>(a.eb);
  const T* __restrict__ mw = static_cast<const T*>(a.mw);
  const T* __restrict__ mb = static_cast<const T*>(a.mb);
  const T* __restrict__ pw = static_cast<const T*>(a.pw);
  const T* __restrict__ pb = static_cast<const T*>(a.pb);

  // 1. A over E (padding rows / channels zero).
  for (int i = tid; i < a.epp * a.cinp; i += kThreads) {
    const int p = i / a.cinp, c = i % a.cinp;
    float v = 0.f;
    if (p < a.ep && c < a.cin) {
      const int ey = ey0 + p / a.ew_, ex = ex0 + p % a.ew_;
      const T* xc = x + c * a.xs[1];
      if (a.ks) {
        const int iy0 = ey * a.ss - a.ks / 2, ix0 = ex * a.ss - a.ks / 2;
        const T* wk = sw + c * a.ks * a.ks;
        switch (a.ks) {
          case 3: v = dw_x<T, 3>(xc, a.xs[2], a.xs[3], iy0, ix0, a.h, a.w, wk, 3); break;
          case 5: v = dw_x<T, 5>(xc, a.xs[2], a.xs[3], iy0, ix0, a.h, a.w, wk, 5); break;
          default: v = dw_x<T, 0>(xc, a.xs[2], a.xs[3], iy0, ix0, a.h, a.w, wk, a.ks); break;
        }
        v += to_f(sb[c]);
      } else if (ey >= 0 && ey < a.h && ex >= 0 && ex < a.w) {
        v = to_f(xc[ey * a.xs[2] + ex * a.xs[3]]);
      }
    }
    sA[p * a.lda + c] = from_f<T>(v);
  }

  for (int mc0 = 0; mc0 < a.mid; mc0 += a.mc) {
    // Weight chunks: expand rows mc0.. (B[k=c][n=j] at sBe[j*ldbe + c]); proj columns mc0.. (sBp[co*ldbp + j]).
    for (int i = tid; i < a.mc * a.cinp; i += kThreads) {
      const int j = i / a.cinp, c = i % a.cinp;
      const int m = mc0 + j;
      sBe[j * a.ldbe + c] = (m < a.mid && c < a.cin) ? ew[static_cast<int64_t>(m) * a.cin + c] : from_f<T>(0.f);
    }
    for (int i = tid; i < a.coutp * a.mc; i += kThreads) {
      const int co = i / a.mc, j = i % a.mc;
      const int m = mc0 + j;
      sBp[co * a.ldbp + j] = (m < a.mid && co < a.cout) ? pw[static_cast<int64_t>(co) * a.mid + m] : from_f<T>(0.f);
    }
    __syncthreads();  // A (first chunk), weight chunks ready; previous chunk's GEMM2 done

    // 2. expansion GEMM
    block_gemm<T>(sA, a.lda, sBe, a.ldbe, sH, a.ldh, a.epp, a.mc, a.cinp, false);
    __syncthreads();
    for (int i = tid; i < a.epp * a.mc; i += kThreads) {
      const int p = i / a.mc, j = i % a.mc;
      const int m = mc0 + j;
      float v = 0.f;
      if (p < a.ep && m < a.mid) {
        const int ey = ey0 + p / a.ew_, ex = ex0 + p % a.ew_;
        if (ey >= 0 && ey < a.eg_h && ex >= 0 && ex < a.eg_w) v = activate<ACT>(sH[p * a.ldh + j] + to_f(eb[m]));
      }
      if (a.km)
        sH[p * a.ldh + j] = v;
      else
        sG[p * a.ldg + j] = from_f<T>(v);  // no mid dw: E is the output tile (ep == top, epp == topp)
    }
    __syncthreads();

    // 3. mid dw + act
    if (a.km) {
      for (int i = tid; i < a.topp * a.mc; i += kThreads) {
        const int o = i / a.mc, j = i % a.mc;
        const int m = mc0 + j;
        float v = 0.f;
        if (o < a.top && m < a.mid) {
          const int oyl = o / a.tow, oxl = o % a.tow;
          const float* hp = sH + ((oyl * a.s) * a.ew_ + oxl * a.s) * a.ldh + j;
          const T* wk = mw + m * a.km * a.km;
          switch (a.km) {
            case 3: v = dw_h<T, 3>(hp, a.ew_, a.ldh, wk, 3); break;
            case 5: v = dw_h<T, 5>(hp, a.ew_, a.ldh, wk, 5); break;
            default: v = dw_h<T, 0>(hp, a.ew_, a.ldh, wk, a.km); break;
          }
          v = activate<ACT>(v + to_f(mb[m]));
        }
        sG[o * a.ldg + j] = from_f<T>(v);
      }
      __syncthreads();
    }

    // 4. projection GEMM, accumulated over the chunks
    block_gemm<T>(sG, a.ldg, sBp, a.ldbp, sAcc, a.ldacc, a.topp, a.coutp, a.mc, mc0 > 0);
    __syncthreads();
  }

  // 5. epilogue: bias (+ residual), store through out's strides.
  T* __restrict__ out = static_cast<T*>(a.out) + static_cast<int64_t>(n) * a.os[0];
  for (int i = tid; i < a.top * a.cout; i += kThreads) {
    const int o = i / a.cout, co = i % a.cout;
    const int oy = oy0 + o / a.tow, ox = ox0 + o % a.tow;
    if (oy >= a.oh || ox >= a.ow) continue;
    float v = sAcc[o * a.ldacc + co] + to_f(pb[co]);
    if (a.residual) v += to_f(x[co * a.xs[1] + oy * a.xs[2] + ox * a.xs[3]]);
    out[co * a.os[1] + oy * a.os[2] + ox * a.os[3]] = from_f<T>(v);
  }
}

// Fills the tiling fields of `a` for a toh x tow tile and chunk mc; returns the shared memory it needs.
template <typename T>
int64_t plan_uib(UibArgs& a, int toh, int tow, int mc) {
  a.toh = toh;
  a.tow = tow;
  a.mc = mc;
  a.tiles_w = (a.ow + tow - 1) / tow;
  a.tiles_per_img = ((a.oh + toh - 1) / toh) * a.tiles_w;
  a.eh = a.km ? (toh - 1) * a.s + a.km : toh;
  a.ew_ = a.km ? (tow - 1) * a.s + a.km : tow;
  a.ep = a.eh * a.ew_;
  a.epp = round_up(a.ep, gemm_pad<T>());
  a.top = toh * tow;
  a.topp = round_up(a.top, gemm_pad<T>());
  a.cinp = round_up(a.cin, gemm_pad<T>());
  a.coutp = round_up(a.cout, gemm_pad<T>());
  a.lda = ld_op<T>(a.cinp);
  a.ldbe = ld_op<T>(a.cinp);
  a.ldbp = ld_op<T>(mc);
  a.ldh = ld_acc(mc);
  a.ldg = ld_op<T>(mc);
  a.ldacc = ld_acc(a.coutp);
  const int64_t t = sizeof(T);
  SmemCarver c;
  a.off_a = c.take(int64_t(a.epp) * a.lda * t);
  a.off_be = c.take(int64_t(mc) * a.ldbe * t);
  a.off_bp = c.take(int64_t(a.coutp) * a.ldbp * t);
  a.off_h = c.take(int64_t(a.epp) * a.ldh * 4);
  a.off_g = c.take(int64_t(a.topp) * a.ldg * t);
  a.off_acc = c.take(int64_t(a.topp) * a.ldacc * 4);
  a.smem = c.bytes;
  return a.smem;
}

// Picks the largest output tile (then the largest mid chunk) whose shared memory fits in `limit` bytes;
// fills `a` and returns true, or returns false with a.smem = what the smallest plan needs.
template <typename T>
inline bool choose_uib_plan(UibArgs& a, int64_t limit) {
  static constexpr int kTiles[][2] = {{8, 8}, {4, 8}, {4, 4}, {2, 4}, {2, 2}, {1, 2}, {1, 1}};
  for (const auto& tile : kTiles) {
    const int toh = std::min<int>(tile[0], a.oh), tow = std::min<int>(tile[1], a.ow);
    for (int mc : {64, 32, 16}) {
      mc = std::min(mc, round_up(a.mid, gemm_pad<T>()));
      if (plan_uib<T>(a, toh, tow, mc) <= limit) return true;
    }
  }
  return false;
}

}  // namespace cuda
}  // namespace mnv4
