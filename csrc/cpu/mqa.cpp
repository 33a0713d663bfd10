// mnv4::mqa on the CPU: the Mobile MQA block fused into two passes per image over channel-major tiles.
//
// Layout ("weights as the A matrix", ukernels.h): activations are [C][pixels] tiles, so every 1x1
// projection is a plain row-major GEMM of the microkernel interface with the torch weight as A (no packing):
//   pass 1, task = (image, band of K/V rows); K/V are computed once per image:
//     xn = x * scale + shift                        [C][P]     (kept for pass 2; a band with a dw conv also
//                                                              normalises its halo rows into scratch)
//     dk_in = dw_k(xn), dv_in = dw_v(xn)            [C][band K/V pixels]  (identity without dw weights)
//     K = (c Wk) dk_in -> transposed into K^T       [M][dk]    c = dk^-0.5 * log2(e), folded into Wk per call
//     V = Wv dv_in                                  [dv][M]
//   pass 2, task = (image, tile of nt query pixels), all heads:
//     Q = Wq xn[:, tile]                            [h*dk][nt] (B read in place from xn, ldb = P)
//     per head: S^T = K^T Q_h                       [M][nt]    (A = K^T, B = the head's rows of Q)
//               column softmax in base 2 (exp2 microkernel, vectorised along the query pixels)
//               O_h = V P^T, then each column times 1/sum   [dv][nt]  (A = V, B = the unnormalised P^T)
//     out = Wo O (+ x)                              GEMM with the residual epilogue straight into an NCHW
//                                                   output, or a [Cout][nt] tile transposed into channels_last.
// The logits exist only as one [M][nt] tile per task (nt shrinks when M is large), never as [heads, N, M].
// Parallelism (at::parallel_for): with a batch that splits evenly over the threads, one task per image runs
// both passes back to back; otherwise pass 1 over (image, K/V band) and pass 2 over (image, query tile), with
// at least as many tasks as threads and the tile size picked by a per-thread cost model, so batch 1 uses
// every thread. xn, K^T and V (a few MB for a batch of 8 at most) are the per-call buffers.
// fp16 input is computed in fp32 (converted on entry, the result converted back; the weights converted once
// per tensor and cached) where no f16 table has fp16 arithmetic (x86); else it runs as bf16 below, in fp16
// (kernel_set.h's with_kernel_set).
//
// bf16 input runs the same plan and attention on the bf16 kernels (ukernels_bf16.h, through KernelSet<bf16_t>;
// MNV4_CPU_LP_ISA forces the table) in the NHWC orientation of uib.cpp: x is taken channels_last (an NCHW x
// is converted at entry and the result back at exit), activations are [pixels][C] rows, and each projection
// is a GEMM with pixel rows as A and the transposed weight, packed in bf16 once and cached (weight_cache.h;
// K's with c folded in), as B. Sums are fp32; the values stored in bf16, each rounded once to nearest even,
// are exactly these (tests/bf16_reference.py staged_mqa is the composite rounded at the same points):
//     xn = bf16(x * scale + shift)                  [P][C]     (scale, shift, dw taps and biases in fp32)
//     dk_in = bf16(dw_k(xn)), dv_in = bf16(dw_v(xn))
//     K = bf16(dk_in bf16(c Wk)^T), V = bf16(dv_in Wv^T), Q = bf16(xn Wq^T)
//                                                   K^T and V packed per image in pass 1 as the attention GEMMs'
//                                                   B operands (lp_pack_block: each band packs its own pixels)
//   the attention on the same kernels, per head h, rows = the tile's query pixels:
//     S = bf16(Q_h K^T)                             [nt][M]    logits in base 2 (c), rounded by the GEMM
//     P = bf16(2^(S - max) / sum)                   [nt][M]    fp32 row softmax (the exp2 microkernel), sum of
//                                                              the unrounded 2^(S - max); P normalised before
//                                                              its rounding, so that O is rounded only once
//     O_h = bf16(P V)                               [nt][h*dv] written in place as the O projection's A rows
//     out = bf16(O Wo^T (+ x))                      the kernel's residual epilogue, bf16 NHWC output.
// (The tables write only bf16, so the logits are rounded too: that leaves the hybrids' accuracy contract,
// tests/test_bf16_model.py, where it was; an fp32-output GEMM in every bf16 table would avoid it.)
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../params.h"
#include "cpu_ops.h"
#include "kernels/interface/softmax.h"
#include "kernel_set.h"
#include "kernels/interface/ukernels.h"
#include "scratch.h"
#include "weight_cache.h"

namespace mnv4 {
namespace {

using cpu::Act;

// The op's parameters and this call's schedule.
struct Geometry : MqaParams {
  int64_t P, M;                // query pixels H*W, key pixels Hk*Wk
  int64_t kv_rows, kv_bands;   // pass 1: K/V rows per band, bands per image
  int64_t qt, q_tiles;         // pass 2: query pixels per tile, tiles per image
  bool per_image;              // one task per image running both passes (images split evenly over threads)
};

struct Weights {
  const float *scale, *shift, *wq, *kdw, *kdb, *wk, *vdw, *vdb, *wv, *wo;
};

// Input rows [r0, r1) that K/V rows [y0, y1) need.
inline void kv_input_rows(const Geometry& g, int64_t y0, int64_t y1, int64_t& r0, int64_t& r1) {
  if (g.kk) {
    r0 = std::max<int64_t>(0, y0 * g.kv_stride - (g.kk / 2));
    r1 = std::min<int64_t>(g.H, (y1 - 1) * g.kv_stride + (g.kk / 2) + 1);
  } else {
    r0 = y0;
    r1 = y1;
  }
}

// Effective cost, in pixel columns, of a GEMM over n columns with the 16-column microkernel tile: a remainder
// of up to 8 columns runs a one-vector tile, a larger one a full 16-column tile.
inline int64_t gemm_cols(int64_t n) {
  const int64_t r = n % 16;
  return n - r + (r == 0 ? 0 : r <= 8 ? 10 : 16);
}

void plan(Geometry& g, int64_t threads) {
  threads = std::max<int64_t>(1, threads);
  const int64_t per_image = g.N >= threads ? 1 : (threads + g.N - 1) / g.N;
  // Enough images for an even split: each thread runs whole images, both passes back to back (K^T and V
  // stay in its own cache, one fork/join per call instead of two).
  g.per_image = g.N >= threads && (g.N % threads == 0 || g.N >= 4 * threads);
  // pass 1: split the K/V rows of an image only when there are fewer images than threads
  g.kv_bands = std::min(g.Hk, per_image);
  g.kv_rows = (g.Hk + g.kv_bands - 1) / g.kv_bands;
  g.kv_bands = (g.Hk + g.kv_rows - 1) / g.kv_rows;
  // pass 2: the query tile nt that minimises the busiest thread's work. at::parallel_for hands each thread
  // one contiguous chunk of ceil(tasks / threads) tasks (task = image x tile); a tile costs its GEMM columns
  // (gemm_cols) plus a fixed ~6 columns (K^T and V streamed again, softmax and per-call set-up). Tiles of
  // at most 128 columns, and fewer when the [M][nt] logits tile would leave L2 (~256 KB).
  int64_t max_nt = 128;
  while (max_nt > 16 && g.M * max_nt > 64 * 1024) max_nt /= 2;
  max_nt = std::min(max_nt, g.P);
  int64_t best_nt = max_nt;
  double best_cost = g.N >= 4 * threads ? -1.0 : 1e300;  // many images: every thread gets whole images
  // candidates, largest first (ties keep the larger tile): max_nt itself, then every multiple of 8 >= 16
  for (int64_t k = max_nt / 8 + 1; k >= 2; --k) {
    const int64_t nt = k == max_nt / 8 + 1 ? max_nt : 8 * k;
    if (nt > max_nt || (nt == max_nt && k != max_nt / 8 + 1)) continue;
    const int64_t tiles = (g.P + nt - 1) / nt, tasks = g.N * tiles;
    const int64_t nthr = std::min(threads, tasks), chunk = (tasks + nthr - 1) / nthr;
    double worst = 0;
    for (int64_t t0 = 0; t0 < tasks; t0 += chunk) {
      double c = 0;
      for (int64_t t = t0; t < std::min(tasks, t0 + chunk); ++t) {
        const int64_t i = t % tiles, cols = std::min(nt, g.P - i * nt);
        c += double(gemm_cols(cols)) + 6.0;
      }
      worst = std::max(worst, c);
    }
    if (worst < best_cost - 1e-9) best_cost = worst, best_nt = nt;
  }
  g.qt = best_nt;
  g.q_tiles = (g.P + g.qt - 1) / g.qt;
}

// xn for the pixels [p0, p0 + np) of image n into a channel-major tile dst [C][np] with channel stride ld.
void normalize_tile(const Geometry& g, const Weights& wt, const float* x, int64_t n, int64_t p0, int64_t np, float* dst,
                    int64_t ld, const cpu::UKernels& uk) {
  if (g.channels_last) {
    uk.transpose(np, g.C, x + (n * g.P + p0) * g.C, g.C, dst, ld);
    for (int64_t c = 0; c < g.C; ++c) {
      float* d = dst + c * ld;
      const float a = wt.scale[c], b = wt.shift[c];
      for (int64_t j = 0; j < np; ++j) d[j] = d[j] * a + b;
    }
  } else {
    for (int64_t c = 0; c < g.C; ++c) {
      const float* src = x + (n * g.C + c) * g.P + p0;
      float* d = dst + c * ld;
      const float a = wt.scale[c], b = wt.shift[c];
      for (int64_t j = 0; j < np; ++j) d[j] = src[j] * a + b;
    }
  }
}

// ---- pass 1: K^T (scaled) and V for K/V rows [y0, y1) of image n ----

struct KvScratch {
  int64_t xn, dk_in, dv_in, kb, dw;
  int64_t total() const { return xn + dk_in + dv_in + kb + dw; }
};

KvScratch kv_scratch(const Geometry& g) {
  KvScratch z{};
  const int64_t mb = g.kv_rows * g.Wk;
  z.xn = g.kk ? g.C * std::min(g.H, g.kv_rows * g.kv_stride + g.kk) * g.W : 0;  // without dw: straight into xn
  z.dk_in = g.kk ? g.C * mb : 0;
  z.dv_in = g.kk ? g.C * mb : 0;
  z.kb = g.dk * mb;
  z.dw = g.kk ? cpu::f32_dwconv_scratch_floats(int(g.kk), int(g.kv_stride), g.W, g.kv_rows) : 0;
  return z;
}

void kv_task(const Geometry& g, const Weights& wt, const float* x, float* xn_all, float* kt, float* v, int64_t n,
             int64_t y0, int64_t y1, float* buf, const KvScratch& z) {
  const cpu::UKernels& uk = cpu::ukernels();
  float* xs = buf;
  float* dki = xs + z.xn;
  float* dvi = dki + z.dk_in;
  float* kb = dvi + z.dv_in;
  float* dws = kb + z.kb;
  // This band's own input rows [o0, o1) (the bands partition the image): their xn goes to xn_all, where
  // pass 2 reads it. With a dw conv the band also needs halo rows, so it normalises the union into scratch.
  const int64_t o0 = std::min(g.H, y0 * g.kv_stride), o1 = y1 == g.Hk ? g.H : std::min(g.H, y1 * g.kv_stride);
  float* xn_img = xn_all + n * g.C * g.P;
  const int64_t mb = (y1 - y0) * g.Wk;
  const float* bk;
  const float* bv;
  int64_t ldb;
  if (g.kk) {
    int64_t r0, r1;
    kv_input_rows(g, y0, y1, r0, r1);
    r0 = std::min(r0, o0);
    r1 = std::max(r1, o1);
    const int64_t px = (r1 - r0) * g.W;
    normalize_tile(g, wt, x, n, r0 * g.W, px, xs, px, uk);
    for (int64_t c = 0; c < g.C; ++c)
      std::memcpy(xn_img + c * g.P + o0 * g.W, xs + c * px + (o0 - r0) * g.W, (o1 - o0) * g.W * sizeof(float));
    uk.dwconv(g.C, int(g.kk), int(g.kv_stride), xs, px, g.W, r0, g.H, g.W, wt.kdw, wt.kdb, Act::None, dki, mb, g.Wk,
              y0, y1, dws);
    uk.dwconv(g.C, int(g.kk), int(g.kv_stride), xs, px, g.W, r0, g.H, g.W, wt.vdw, wt.vdb, Act::None, dvi, mb, g.Wk,
              y0, y1, dws);
    bk = dki;
    bv = dvi;
    ldb = mb;
  } else {  // K/V pixels = the band's own pixels
    normalize_tile(g, wt, x, n, o0 * g.W, mb, xn_img + o0 * g.W, g.P, uk);
    bk = bv = xn_img + o0 * g.W;
    ldb = g.P;
  }
  const int64_t m0 = y0 * g.Wk;
  uk.gemm(g.dk, mb, g.C, wt.wk, g.C, bk, ldb, kb, mb, nullptr, Act::None, nullptr, 0);
  uk.transpose(g.dk, mb, kb, mb, kt + (n * g.M + m0) * g.dk, g.dk);
  uk.gemm(g.dv, mb, g.C, wt.wv, g.C, bv, ldb, v + n * g.dv * g.M + m0, g.M, nullptr, Act::None, nullptr, 0);
}

// ---- pass 2: attention + output projection for query pixels [p0, p0 + nt) of image n ----

// The attention of one query tile, all heads, in fp32: q [h*dk][nt] (head h's rows from h*dk), K^T [M][dk]
// (scaled), V [dv][M] of its image -> o [h*dv][nt], normalised. s: [M][nt] logits scratch, sum: nt floats.
void attend(const Geometry& g, const cpu::UKernels& uk, const float* ktn, const float* vn, const float* q, int64_t nt,
            float* s, float* sum, float* o) {
  const cpu::SoftmaxUKernels& sk = cpu::softmax_ukernels();
  for (int64_t h = 0; h < g.heads; ++h) {
    uk.gemm(g.M, nt, g.dk, ktn, g.dk, q + h * g.dk * nt, nt, s, nt, nullptr, Act::None, nullptr, 0);
    sk.softmax_cols(g.M, nt, s, nt, sum);
    float* oh = o + h * g.dv * nt;
    uk.gemm(g.dv, nt, g.M, vn, g.M, s, nt, oh, nt, nullptr, Act::None, nullptr, 0);
    for (int64_t j = 0; j < nt; ++j) sum[j] = 1.f / sum[j];
    for (int64_t d = 0; d < g.dv; ++d) {
      float* od = oh + d * nt;
      for (int64_t j = 0; j < nt; ++j) od[j] *= sum[j];
    }
  }
}

struct QScratch {
  int64_t q, s, sum, o, y;
  int64_t total() const { return q + s + sum + o + y; }
};

QScratch q_scratch(const Geometry& g) {
  QScratch z{};
  z.q = g.heads * g.dk * g.qt;
  z.s = g.M * g.qt;
  z.sum = g.qt;
  z.o = g.heads * g.dv * g.qt;
  z.y = g.channels_last ? g.Cout * g.qt : 0;
  return z;
}

void query_task(const Geometry& g, const Weights& wt, const float* x, const float* xn_all, const float* kt,
                const float* v, float* out, int64_t n, int64_t p0, int64_t nt, float* buf, const QScratch& z) {
  const cpu::UKernels& uk = cpu::ukernels();
  float* q = buf;
  float* s = q + z.q;
  float* sum = s + z.s;
  float* o = sum + z.sum;
  float* y = o + z.o;
  uk.gemm(g.heads * g.dk, nt, g.C, wt.wq, g.C, xn_all + n * g.C * g.P + p0, g.P, q, nt, nullptr, Act::None, nullptr,
          0);
  attend(g, uk, kt + n * g.M * g.dk, v + n * g.dv * g.M, q, nt, s, sum, o);
  const int64_t hv = g.heads * g.dv;
  if (g.channels_last) {
    uk.gemm(g.Cout, nt, hv, wt.wo, hv, o, nt, y, nt, nullptr, Act::None, nullptr, 0);
    float* dst = out + (n * g.P + p0) * g.Cout;
    uk.transpose(g.Cout, nt, y, nt, dst, g.Cout);
    if (g.residual) {  // Cout == C
      const float* r = x + (n * g.P + p0) * g.C;
      for (int64_t i = 0; i < nt * g.Cout; ++i) dst[i] += r[i];
    }
  } else {
    const float* r = g.residual ? x + n * g.C * g.P + p0 : nullptr;
    uk.gemm(g.Cout, nt, hv, wt.wo, hv, o, nt, out + n * g.Cout * g.P + p0, g.P, nullptr, Act::None, r, g.P);
  }
}

// Both passes over the call's tasks (see the file comment): kv(t) for t < N * kv_bands, query(t) for
// t < N * q_tiles, image by image on whole-image threads when g.per_image.
template <class KV, class Query>
void run_passes(const Geometry& g, const KV& kv, const Query& query) {
  if (g.per_image) {
    at::parallel_for(0, g.N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t t = n * g.kv_bands; t < (n + 1) * g.kv_bands; ++t) kv(t);
        for (int64_t t = n * g.q_tiles; t < (n + 1) * g.q_tiles; ++t) query(t);
      }
    });
  } else {
    at::parallel_for(0, g.N * g.kv_bands, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) kv(t);
    });
    at::parallel_for(0, g.N * g.q_tiles, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) query(t);
    });
  }
}

// Softmax scale dk^-0.5 and log2(e) (the softmax runs in base 2), folded into Wk: K^T comes out scaled.
double k_scale(const Geometry& g) { return 1.4426950408889634 / std::sqrt(double(g.dk)); }

at::Tensor f32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

// ---- bf16 / fp16: the NHWC orientation (see the file comment); E = cpu::bf16_t or cpu::f16_t ----

template <class E>
struct LpWeights {
  const float *scale, *shift, *kdw, *kdb, *vdw, *vdb;  // fp32; the dw taps as [k*k][C]
  LpBMat<E> q, k, v, o;                                // B = W^T, packed in E (k: times c)
};

// Bytes of `elems` elements of E rounded up to whole 64-byte lines (scratch.h lines_of).
template <class E>
inline int64_t bytes_of(int64_t elems) {
  return lines_of<E>(elems) * int64_t(sizeof(E));
}
// Parts of a task's scratch (task_scratch_of<char>), each on whole lines: elements of E from a byte cursor.
struct Carve {
  char* p;
  template <class E>
  E* take(int64_t elems) {
    E* r = reinterpret_cast<E*>(p);
    p += bytes_of<E>(elems);
    return r;
  }
};

// xn = E(x * scale + shift) for the pixels [p0, p0 + np) of image n (x: [N*P][C]) into dst [np][C].
template <class E>
void normalize_rows(const Geometry& g, const LpWeights<E>& wt, const E* x, int64_t n, int64_t p0, int64_t np, E* dst) {
  using C10 = typename LpStorage<E>::C10;  // torch's conversions, vectorised
  const auto* src = reinterpret_cast<const C10*>(x + (n * g.P + p0) * g.C);
  auto* d = reinterpret_cast<C10*>(dst);
  for (int64_t j = 0; j < np; ++j, src += g.C, d += g.C)
    for (int64_t c = 0; c < g.C; ++c) d[c] = C10(static_cast<float>(src[c]) * wt.scale[c] + wt.shift[c]);
}

// pass 1 scratch (bytes): normalised rows with the dw halo, the dw outputs, a K or V tile
template <class E>
int64_t kv_bytes_lp(const Geometry& g) {
  const int64_t mb = g.kv_rows * g.Wk, kv = std::max(g.dk, g.dv) * mb;
  const int64_t rows = g.kk ? std::min(g.H, g.kv_rows * g.kv_stride + g.kk) : 0;
  return bytes_of<E>(rows * g.W * g.C) + 2 * bytes_of<E>(g.kk ? mb * g.C : 0) + bytes_of<E>(kv);
}

// K^T and V of each image as the attention GEMMs' packed B operands (the table's layout, lp_pack_block):
// K^T (dk x M) for S = Q_h K^T, V (M x dv) for O_h = P V.
struct KvPacked {
  cpu::LpPack pack;
  int64_t k_size, v_size;  // elements per image
  template <class E>
  LpBMat<E> k(const E* base, const Geometry& g, int64_t n) const {
    return {base + n * k_size, cpu::lp_slab_stride(pack, 1, g.dk), pack, 1, g.dk};
  }
  template <class E>
  LpBMat<E> v(const E* base, const Geometry& g, int64_t n) const {
    return {base + n * v_size, cpu::lp_slab_stride(pack, 1, g.M), pack, 1, g.M};
  }
};

template <class E>
void kv_task_lp(const KernelSet<E>& lk, const Geometry& g, const LpWeights<E>& wt, const KvPacked& kvp, const E* x,
                E* xn_all, E* kp, E* vp, int64_t n, int64_t y0, int64_t y1) {
  const int64_t mb = (y1 - y0) * g.Wk, m0 = y0 * g.Wk;
  Carve z{task_scratch_of<char>(kv_bytes_lp<E>(g))};
  const int64_t rows = g.kk ? std::min(g.H, g.kv_rows * g.kv_stride + g.kk) : 0;
  E* xs = z.take<E>(rows * g.W * g.C);
  E* dki = z.take<E>(g.kk ? g.kv_rows * g.Wk * g.C : 0);
  E* dvi = z.take<E>(g.kk ? g.kv_rows * g.Wk * g.C : 0);
  E* tb = z.take<E>(std::max(g.dk, g.dv) * g.kv_rows * g.Wk);
  // the band's own input rows [o0, o1) go to xn_all (pass 2 reads them); see kv_task
  const int64_t o0 = std::min(g.H, y0 * g.kv_stride), o1 = y1 == g.Hk ? g.H : std::min(g.H, y1 * g.kv_stride);
  E* xn_img = xn_all + n * g.P * g.C;
  const E *ak = xn_img + o0 * g.W * g.C, *av = ak;  // without dw: K/V pixels = the band's own pixels
  if (g.kk) {
    int64_t r0, r1;
    kv_input_rows(g, y0, y1, r0, r1);
    r0 = std::min(r0, o0);
    r1 = std::max(r1, o1);
    normalize_rows(g, wt, x, n, r0 * g.W, (r1 - r0) * g.W, xs);
    std::memcpy(xn_img + o0 * g.W * g.C, xs + (o0 - r0) * g.W * g.C, (o1 - o0) * g.W * g.C * sizeof(E));
    lk.dw(g.C, int(g.kk), int(g.kv_stride), xs, g.C, g.W * g.C, r0, g.H, g.W, wt.kdw, g.C, wt.kdb, Act::None, dki,
          g.C, g.Wk * g.C, y0, y1);
    lk.dw(g.C, int(g.kk), int(g.kv_stride), xs, g.C, g.W * g.C, r0, g.H, g.W, wt.vdw, g.C, wt.vdb, Act::None, dvi,
          g.C, g.Wk * g.C, y0, y1);
    ak = dki;
    av = dvi;
  } else {
    normalize_rows(g, wt, x, n, o0 * g.W, (o1 - o0) * g.W, xn_img + o0 * g.W * g.C);
  }
  // the band's K rows [mb][dk] are K^T's columns [m0, m0 + mb); its V rows are V's rows [m0, m0 + mb)
  lk.gemm(mb, g.dk, g.C, ak, g.C, wt.k, 0, tb, g.dk, nullptr, Act::None, nullptr, 0);
  cpu::lp_pack_block(kvp.pack, g.dk, g.M, 0, g.dk, m0, m0 + mb, tb, 1, g.dk, kp + n * kvp.k_size);
  lk.gemm(mb, g.dv, g.C, av, g.C, wt.v, 0, tb, g.dv, nullptr, Act::None, nullptr, 0);
  cpu::lp_pack_block(kvp.pack, g.M, g.dv, m0, m0 + mb, 0, g.dv, tb, g.dv, 1, vp + n * kvp.v_size);
}

// P = E(2^(s - max) / sum), sum = the fp32 sum of the unrounded 2^(s - max), for each of the `rows` rows of
// the logits s [rows][M] in E (base 2), in place. f: M floats. A NaN logit makes its row's sum, so the whole
// row, NaN (as torch.softmax); so does +inf (inf - inf).
template <class E>
void softmax_rows(const cpu::SoftmaxUKernels& sk, int64_t rows, int64_t M, E* s, float* f) {
  using C10 = typename LpStorage<E>::C10;
  constexpr int L = 16;  // independent max / sum lanes: the compiler vectorises them, and the sum is not one chain
  for (int64_t r = 0; r < rows; ++r) {
    auto* row = reinterpret_cast<C10*>(s + r * M);
    int64_t i;
    for (i = 0; i < M; ++i) f[i] = static_cast<float>(row[i]);
    float lane[L];
    for (int l = 0; l < L; ++l) lane[l] = -INFINITY;
    for (i = 0; i + L <= M; i += L)
      for (int l = 0; l < L; ++l) lane[l] = f[i + l] > lane[l] ? f[i + l] : lane[l];
    for (; i < M; ++i) lane[0] = f[i] > lane[0] ? f[i] : lane[0];
    float mx = lane[0];
    for (int l = 1; l < L; ++l) mx = lane[l] > mx ? lane[l] : mx;
    for (i = 0; i < M; ++i) f[i] -= mx;
    sk.exp2(M, f, f);
    for (int l = 0; l < L; ++l) lane[l] = 0.f;
    for (i = 0; i + L <= M; i += L)
      for (int l = 0; l < L; ++l) lane[l] += f[i + l];
    for (; i < M; ++i) lane[0] += f[i];
    float sum = 0.f;
    for (int l = 0; l < L; ++l) sum += lane[l];
    const float inv = 1.f / sum;
    for (i = 0; i < M; ++i) row[i] = C10(f[i] * inv);
  }
}

// pass 2 scratch (bytes): Q [nt][h*dk] and O [nt][h*dv] as pixel rows in E, one head's logits / P [nt][M], a
// row of floats
template <class E>
int64_t query_bytes_lp(const Geometry& g) {
  return bytes_of<E>(g.heads * g.dk * g.qt) + bytes_of<E>(g.heads * g.dv * g.qt) + bytes_of<E>(g.M * g.qt) +
         bytes_of<float>(g.M);
}

template <class E>
void query_task_lp(const KernelSet<E>& lk, const cpu::SoftmaxUKernels& sk, const Geometry& g, const LpWeights<E>& wt,
                   const KvPacked& kvp, const E* x, const E* xn_all, const E* kp, const E* vp, E* out, int64_t n,
                   int64_t p0, int64_t nt) {
  const int64_t hk = g.heads * g.dk, hv = g.heads * g.dv;
  Carve z{task_scratch_of<char>(query_bytes_lp<E>(g))};
  E* q = z.take<E>(hk * g.qt);
  E* o = z.take<E>(hv * g.qt);
  E* s = z.take<E>(g.M * g.qt);
  float* f = z.take<float>(g.M);
  const int64_t px = n * g.P + p0;
  lk.gemm(nt, hk, g.C, xn_all + px * g.C, g.C, wt.q, 0, q, hk, nullptr, Act::None, nullptr, 0);
  const LpBMat<E> kb = kvp.k(kp, g, n), vb = kvp.v(vp, g, n);
  for (int64_t h = 0; h < g.heads; ++h) {
    lk.gemm(nt, g.M, g.dk, q + h * g.dk, hk, kb, 0, s, g.M, nullptr, Act::None, nullptr, 0);
    softmax_rows(sk, nt, g.M, s, f);
    lk.gemm(nt, g.dv, g.M, s, g.M, vb, 0, o + h * g.dv, hv, nullptr, Act::None, nullptr, 0);
  }
  lk.gemm(nt, g.Cout, hv, o, hv, wt.o, 0, out + px * g.Cout, g.Cout, nullptr, Act::None,
          g.residual ? x + px * g.C : nullptr, g.C);
}

// A 1x1 weight [O, I, 1, 1] as the fp32 matrix [I][O] (B = W^T; packed from it once); a depthwise weight
// [C, 1, k, k] as [k*k][C].
at::Tensor kn_matrix(const at::Tensor& w) { return w.to(at::kFloat).reshape({w.size(0), -1}).t().contiguous(); }

template <class E>
at::Tensor mqa_lp(const Geometry& g, const at::Tensor& x, const at::Tensor& norm_scale, const at::Tensor& norm_shift,
                  const at::Tensor& q_w, const c10::optional<at::Tensor>& k_dw_w,
                  const c10::optional<at::Tensor>& k_dw_b, const at::Tensor& k_w,
                  const c10::optional<at::Tensor>& v_dw_w, const c10::optional<at::Tensor>& v_dw_b,
                  const at::Tensor& v_w, const at::Tensor& o_w) {
  using KS = KernelSet<E>;
  const KS lk;
  const cpu::SoftmaxUKernels& sk = cpu::softmax_ukernels();
  // fp32 constants (converted once per tensor, fp32_constant) and the projections packed in E
  auto vec = [](const at::Tensor& t) { return fp32_constant(t, "f32", [&] { return f32(t); }); };
  auto taps = [](const at::Tensor& t) { return fp32_constant(t, "f32_kc", [&] { return kn_matrix(t); }); };
  const at::Tensor sc = vec(norm_scale), sh = vec(norm_shift);
  at::Tensor kdw, kdb, vdw, vdb;
  if (g.kk) kdw = taps(*k_dw_w), kdb = vec(*k_dw_b), vdw = taps(*v_dw_w), vdb = vec(*v_dw_b);
  const float c = static_cast<float>(k_scale(g));
  const auto qo = lk.operand(q_w, 1, g.C, g.heads * g.dk, [&] { return kn_matrix(q_w); });
  const auto ko = lp_weight_operand<E>(k_w, lk.lk.pack, 1, g.C, g.dk, [&] { return kn_matrix(k_w).mul(c); }, "kscale");
  const auto vo = lk.operand(v_w, 1, g.C, g.dv, [&] { return kn_matrix(v_w); });
  const auto oo = lk.operand(o_w, 1, g.heads * g.dv, g.Cout, [&] { return kn_matrix(o_w); });
  auto fp = [&](const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
  const LpWeights<E> wt{fp(sc), fp(sh), fp(kdw), fp(kdb), fp(vdw), fp(vdb), qo.mat, ko.mat, vo.mat, oo.mat};

  const auto cl = at::MemoryFormat::ChannelsLast;
  const at::Tensor xe = x.contiguous(cl);
  const auto opt = x.options();
  at::Tensor xn = at::empty({g.N, g.P, g.C}, opt);                          // xn, pixel rows
  const KvPacked kvp{lk.lk.pack, cpu::lp_packed_size(lk.lk.pack, 1, g.dk, g.M),
                     cpu::lp_packed_size(lk.lk.pack, 1, g.M, g.dv)};
  at::Tensor kpk = at::empty({g.N, kvp.k_size}, opt);  // K^T (scaled), packed
  at::Tensor vpk = at::empty({g.N, kvp.v_size}, opt);  // V, packed
  at::Tensor out = at::empty({g.N, g.Cout, g.H, g.W}, opt.memory_format(cl));
  const E* xp = KS::data(xe);
  E* xnp = KS::data(xn);
  E* kp = KS::data(kpk);
  E* vp = KS::data(vpk);
  E* op = KS::data(out);
  run_passes(
      g,
      [&](int64_t t) {
        const int64_t n = t / g.kv_bands, y0 = (t % g.kv_bands) * g.kv_rows;
        kv_task_lp(lk, g, wt, kvp, xp, xnp, kp, vp, n, y0, std::min(g.Hk, y0 + g.kv_rows));
      },
      [&](int64_t t) {
        const int64_t n = t / g.q_tiles, p0 = (t % g.q_tiles) * g.qt;
        query_task_lp(lk, sk, g, wt, kvp, xp, xnp, kp, vp, op, n, p0, std::min(g.P, p0 + g.qt) - p0);
      });
  // NCHW result: a fresh contiguous tensor (out may already count as contiguous when Cout == 1 or H*W == 1, but
  // with other strides than the fake kernel's)
  if (!g.channels_last)
    return at::empty(out.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous)).copy_(out);
  return out;
}

// fp32 (and fp16 computed in fp32): the channel-major plan of the file comment; the result in fp32, in x's
// memory format.
at::Tensor mqa_f32(const Geometry& g, const at::Tensor& x, const at::Tensor& norm_scale, const at::Tensor& norm_shift,
                   const at::Tensor& q_w, const c10::optional<at::Tensor>& k_dw_w,
                   const c10::optional<at::Tensor>& k_dw_b, const at::Tensor& k_w,
                   const c10::optional<at::Tensor>& v_dw_w, const c10::optional<at::Tensor>& v_dw_b,
                   const at::Tensor& v_w, const at::Tensor& o_w) {
  const auto fmt = g.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  // fp32 input: the weights as they are (or contiguous copies); fp16: converted once per tensor (fp32_constant);
  // K times the softmax scale made once per tensor for both (derived_constant)
  const at::Tensor xf = x.to(at::kFloat).contiguous(fmt);
  auto cf = [](const at::Tensor& t) { return fp32_constant(t, "f32", [&] { return f32(t); }); };
  const at::Tensor sc = cf(norm_scale), sh = cf(norm_shift), wq = cf(q_w), wv = cf(v_w), wo = cf(o_w);
  const at::Tensor wk =
      derived_constant(k_w, "f32_kscale", [&] { return k_w.to(at::kFloat).mul(k_scale(g)).contiguous(); });
  at::Tensor kdw, kdb, vdw, vdb;
  if (g.kk) kdw = cf(*k_dw_w), kdb = cf(*k_dw_b), vdw = cf(*v_dw_w), vdb = cf(*v_dw_b);
  const Weights wt{sc.data_ptr<float>(), sh.data_ptr<float>(), wq.data_ptr<float>(),
                   g.kk ? kdw.data_ptr<float>() : nullptr, g.kk ? kdb.data_ptr<float>() : nullptr,
                   wk.data_ptr<float>(), g.kk ? vdw.data_ptr<float>() : nullptr,
                   g.kk ? vdb.data_ptr<float>() : nullptr, wv.data_ptr<float>(), wo.data_ptr<float>()};

  const auto f32opt = x.options().dtype(at::kFloat);
  at::Tensor xn = at::empty({g.N, g.C, g.P}, f32opt);   // the normalised input, channel-major
  at::Tensor kt = at::empty({g.N, g.M, g.dk}, f32opt);  // K^T, scaled
  at::Tensor vv = at::empty({g.N, g.dv, g.M}, f32opt);
  at::Tensor out = at::empty({g.N, g.Cout, g.H, g.W}, f32opt.memory_format(fmt));
  const float* xp = xf.data_ptr<float>();
  float* xnp = xn.data_ptr<float>();
  float* ktp = kt.data_ptr<float>();
  float* vp = vv.data_ptr<float>();
  float* op = out.data_ptr<float>();

  const KvScratch zk = kv_scratch(g);
  const QScratch zq = q_scratch(g);
  run_passes(
      g,
      [&](int64_t t) {
        float* const sp = task_scratch(zk.total());
        const int64_t n = t / g.kv_bands, y0 = (t % g.kv_bands) * g.kv_rows;
        kv_task(g, wt, xp, xnp, ktp, vp, n, y0, std::min(g.Hk, y0 + g.kv_rows), sp, zk);
      },
      [&](int64_t t) {
        float* const sp = task_scratch(zq.total());
        const int64_t n = t / g.q_tiles, p0 = (t % g.q_tiles) * g.qt;
        query_task(g, wt, xp, xnp, ktp, vp, op, n, p0, std::min(g.P, p0 + g.qt) - p0, sp, zq);
      });
  return out;
}

}  // namespace

at::Tensor mqa_cpu(const at::Tensor& x, const at::Tensor& norm_scale, const at::Tensor& norm_shift,
                   const at::Tensor& q_w, const c10::optional<at::Tensor>& k_dw_w,
                   const c10::optional<at::Tensor>& k_dw_b, const at::Tensor& k_w,
                   const c10::optional<at::Tensor>& v_dw_w, const c10::optional<at::Tensor>& v_dw_b,
                   const at::Tensor& v_w, const at::Tensor& o_w, int64_t num_heads, int64_t kv_stride, bool residual) {
  const MqaParams p = make_mqa_params(x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w,
                                      num_heads, kv_stride, residual);
  const auto fmt = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (p.N == 0) return at::empty({0, p.Cout, p.H, p.W}, x.options().memory_format(fmt));

  Geometry g{p};
  g.P = g.H * g.W;
  g.M = g.Hk * g.Wk;
  plan(g, at::get_num_threads());

  at::Tensor out = with_kernel_set<kTakesF16>(x.scalar_type(), [&](auto ks) {
    using E = typename decltype(ks)::Elem;
    if constexpr (std::is_same<E, float>::value)
      return mqa_f32(g, x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w);
    else
      return mqa_lp<E>(g, x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w);
  });
  return out.scalar_type() == x.scalar_type() ? out : out.to(x.scalar_type());
}

TORCH_LIBRARY_IMPL(mnv4, CPU, m) { m.impl("mqa", &mqa_cpu); }

}  // namespace mnv4
