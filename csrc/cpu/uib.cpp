// mnv4::uib on the CPU: one fused pass per UIB block, on channels_last (pixel-major) tiles.
//
// The op computes in channels_last: a channels_last x is read in place, any other x is converted to it at
// entry, and the result is converted back to NCHW at exit when x's memory format asks for it (the output's
// format follows x's, as on every backend). Each task computes its part of the block through all four stages
// in per-thread scratch tiles that stay in L1/L2, so the expanded tensor (mid = 2-6x Cin channels) never
// exists in full. Tiles are [pixels][channels]; the input and output are read and written in place. A 1x1
// conv is a GEMM with pixels as rows and the weight transposed, [Cin][Cout], as B: packed once per weight
// tensor into the running table's column slabs and cached (weight_cache.h, gemm_b), or read in place when
// it cannot be cached. The depthwise convs are vectorised along the channels (weights as [k*k][C]:
// nhwc_weight). Rows of a tile are contiguous, so the rolling window below shifts with one memmove.
// Stages: S start dw (no act; ExtraDW, ConvNext) -> E expand 1x1 + bias + act -> M mid dw + act (carries the
// stride; ExtraDW, IB) -> O proj 1x1 + bias (+ x).
//
// Three schedules:
//  * row bands (default): a task = (image, band of output rows), bands only as many as keep the threads
//    busy. Inside a band, steps of g.sb output rows; the expanded rows live in a rolling window (the rows
//    the next step's mid dw still needs are shifted to the front, only new rows are computed), so only
//    band boundaries recompute the mid dw's halo. The step height minimises a small cost model of the
//    running table's GEMM register tiles, within an L2-sized window.
//  * mid-channel slices (batch < threads on small planes, where row bands would recompute much of the
//    halo, or without a mid dw would be uneven): a task = (image, slice of the mid channels) through the
//    mid dw; fp32 goes on through the projection's partial sum (slice 0's straight into the output with
//    bias (+ x)) and a second pass adds the other slices' partials; bf16 writes the slice into a per-call mid
//    tensor [pixels][mid] and a second pass runs the projection over the full mid with bias (+ x), split over
//    output pixels or column slabs. See use_mid_split().
//  * several whole images per task (small planes, batch >= 2x threads): wider GEMMs, weights streamed once
//    per image group. See images_per_task().
// MNV4_UIB_SPLIT=rows|mid|images forces one (tests); MNV4_CPU_ISA=scalar|avx2|avx512|neon forces the
// microkernels.
//
// Element types: the schedules are templates on a kernel set KS (kernel_set.h): E = KS::Elem, the type of x and
// the output, and T = KS::Tile, that of the S, E, M tiles. fp32: KernelSet<float>. bf16 x, in two forms by
// the running bf16 table (ukernels_bf16.h; MNV4_CPU_LP_ISA forces it):
//  * a table with a bf16 dot product (avx512bf16, amx, neon_bf16, ...): KernelSet<bf16_t>, the bf16 kernels.
//    The tiles hold bf16, the 1x1 weights are packed in bf16, the dw weights and all biases are fp32, sums are
//    fp32 and each stage's output (S, E, M and the result) is rounded to bf16 once, as the composite run in
//    bf16 by torch rounds each conv's output. Every schedule stores each stage's output once (the mid-channel
//    slices keep the whole mid tensor rather than projection partials, which the bf16 kernels could only
//    store rounded), so all three round at the same points.
//  * a convert-on-load table (cpu::lp_convert_on_load: avx512, avx2, neon, scalar): WideningKernelSet, the
//    fp32 kernels (MNV4_CPU_ISA) on fp32 tiles with the 1x1 weights packed in fp32 from their bf16 values:
//    x is widened where a stage reads it (the start dw's input rows, the expand's when there is no start dw),
//    S, E and M stay fp32, and only the result is rounded to bf16 (after the bias and the residual, added in
//    fp32). One rounding where the first form has four: the fp32 block's cost plus the conversions, no
//    bf16 widening inside the stages. The mid-channel slices keep an fp32 mid tensor.
// fp16 x: KernelSet<f16_t> where the f16 table has fp16 arithmetic (neon_fp16: as the first bf16 form, fp16
// tiles and weights, fp16 products summed in short chunks: ukernels_bf16.h), else computed in fp32 (converted
// on entry, the result converted back): kernel_set.h's with_kernel_set.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../params.h"
#include "cpu_ops.h"
#include "kernel_set.h"
#include "kernels/interface/ukernels.h"
#include "scratch.h"
#include "tasks.h"
#include "weight_cache.h"

namespace mnv4 {
namespace {

using cpu::Act;

// The op's parameters and this call's schedule.
struct Geometry : UibParams {
  int64_t bh, nb;   // output rows per band (task), bands per image
  int64_t sb;       // output rows per step inside a band
  int64_t cap_e;    // rows of the rolling expanded-tensor window
};

// The expanded rows [e0, e1) that output rows [oy0, oy1) need.
inline void expanded_rows(const Geometry& g, int64_t oy0, int64_t oy1, int64_t& e0, int64_t& e1) {
  if (g.km) {
    e0 = std::max<int64_t>(0, oy0 * g.ms - g.km / 2);
    e1 = std::min<int64_t>(g.Hs, (oy1 - 1) * g.ms + g.km / 2 + 1);
  } else {
    e0 = oy0;
    e1 = oy1;
  }
}

// The input rows [r0, r1) that expanded rows [e0, e1) need.
inline void input_rows(const Geometry& g, int64_t e0, int64_t e1, int64_t& r0, int64_t& r1) {
  if (g.ks) {
    r0 = std::max<int64_t>(0, e0 * g.ss - g.ks / 2);
    r1 = std::min<int64_t>(g.H, (e1 - 1) * g.ss + g.ks / 2 + 1);
  } else {
    r0 = e0;
    r1 = e1;
  }
}

inline int64_t window_rows(const Geometry& g, int64_t out_rows) {
  return g.km ? std::min(g.Hs, (out_rows - 1) * g.ms + g.km) : out_rows;
}

struct Sizes {  // scratch floats per stage
  int64_t s, e, m;
  int64_t total() const { return s + e + m; }
};

// Bands (tasks): as few as keep every thread busy (each band boundary recomputes the mid dw's halo rows of
// the expanded tensor). Steps inside a band: the step height minimising a cost model (GEMM register tiles
// of the running table's mr pixels, a short last tile costing about its rows, plus a fixed cost per step),
// as long as the expanded window and the mid dw output stay within L2 together.
double gemm_tiles(int64_t pixels, int64_t mr) {
  const int64_t rem = pixels % mr;
  return double(pixels / mr) + (rem == 0 ? 0.0 : 0.25 + double(rem) / double(mr));
}

void plan(Geometry& g, int64_t threads, int64_t mr) {
  int64_t nb = 1;
  if (g.N < threads) nb = std::min(g.Ho, (threads + g.N - 1) / g.N);
  g.bh = (g.Ho + nb - 1) / nb;
  g.nb = (g.Ho + g.bh - 1) / g.bh;
  constexpr int64_t kBudgetFloats = 160 * 1024;
  int64_t best_sb = 1;
  double best = 1e300;
  for (int64_t sb = 1; sb <= g.bh; ++sb) {
    const int64_t floats = g.mid * (window_rows(g, sb) * g.Ws + (g.km ? sb * g.Wo : 0));
    if (sb > 1 && floats > kBudgetFloats) break;
    double cost = 0;
    int64_t ew1 = 0;
    for (int64_t oy0 = 0; oy0 < g.bh; oy0 += sb) {  // the first band (the largest)
      const int64_t oy1 = std::min(g.bh, oy0 + sb);
      int64_t e0, e1;
      expanded_rows(g, oy0, oy1, e0, e1);
      cost += gemm_tiles((oy1 - oy0) * g.Wo, mr) + gemm_tiles((e1 - std::max(e0, ew1)) * g.Ws, mr) + 1.0;
      ew1 = e1;
    }
    if (cost < best * 0.999) best = cost, best_sb = sb;
  }
  g.sb = best_sb;
  g.cap_e = window_rows(g, best_sb);
}

// fp32 dw weights as [k*k][C] (see nhwc_weight) and fp32 biases; the 1x1 weights as the kernel set's operands.
template <class KS>
struct Weights {
  const float *sw, *sb, *eb, *mw, *mb, *pb;
  typename KS::B eB, pB;
};

// The rolling window of expanded rows [ew0, ew1) before a step that needs rows [e0, e1): keeps the rows
// [e0, ew1) it still has (shift(rows to drop, rows to keep) moves them to the front of the window) or starts
// empty at e0. The caller then computes rows [ew1, e1).
template <class Shift>
inline void advance_window(int64_t e0, int64_t& ew0, int64_t& ew1, Shift shift) {
  if (e0 >= ew0 && e0 < ew1) {
    if (e0 > ew0) {
      shift(e0 - ew0, ew1 - e0);
      ew0 = e0;
    }
  } else {
    ew0 = ew1 = e0;
  }
}

// ---- Mid-channel slices: few images, small planes ----
// With fewer images than threads, row bands would each recompute the mid dw's halo of expanded rows
// (on a 7x7 plane split in two, a 5x5 mid dw makes the expand GEMM ~1.6x the work), and without a mid dw
// they are uneven on a plane of few rows (7 rows in two bands: 4 + 3, the larger 14% over an even share).
// Instead a task takes one image and a slice [m0, m1) of the mid channels: start dw (whole plane; for a large
// one, computed once before the slices instead: start_dw_once), expand columns m0..m1, mid dw on them (if
// any). Then, in two forms:
//  * fp32, partial sums (run_mid_partial_nhwc): the task goes on through the projection's partial sum over
//    its slice, Cout x pixels: slice 0's into the output with the bias (+ x), the others' into a buffer; the
//    projection has no activation, so a second pass adds those partials into the output.
//  * bf16, mid tensor (run_mid_tensor_nhwc): the task writes its slice as channels m0..m1 of the call's mid
//    tensor [N*P][mid]; a second parallel region runs the projection over the full K = mid with the bias
//    (+ x), in blocks of output pixels or of output-column slabs, each output written once. Partials would be
//    stored rounded to bf16 (the bf16 kernels write only bf16), a rounding per slice the composite does not
//    have; this form stores every stage's output once, as the row bands do.
// The expanded tensor never exists in full: a task holds (m1 - m0) channels of one image (the mid tensor,
// P pixels x mid channels per image, is the mid dw's output, within L2 by use_mid_split's bound).

bool use_mid_split(const Geometry& g, int64_t threads) {
  if (const char* e = std::getenv("MNV4_UIB_SPLIT")) {  // tests: force one schedule
    if (std::strcmp(e, "mid") == 0) return true;
    if (std::strcmp(e, "rows") == 0) return false;
  }
  if (g.N >= threads || g.nb < 2) return false;
  // the row bands' cost in expanded rows: with a mid dw, the rows each band computes (halos included);
  // without one, the largest band's rows times the bands (the threads wait for it)
  int64_t computed = g.bh * g.nb;
  if (g.km) {
    computed = 0;
    for (int64_t b = 0; b < g.nb; ++b) {
      int64_t e0, e1;
      expanded_rows(g, b * g.bh, std::min(g.Ho, (b + 1) * g.bh), e0, e1);
      computed += e1 - e0;
    }
  }
  return computed * 10 > g.Hs * 11 && g.mid * g.Hs * g.Ws <= 256 * 1024;  // > 10% over, slice fits L2
}

// The mid-channel slices' start dw, once: every image's S [PS][sps] at S + n * PS * sps, in row bands over the
// threads. Each slice's task reads the whole plane of S; computing it there would repeat it once per slice.
// Worth its own parallel region where the repeated work costs more than the region: from 256K multiply-adds
// (Conv-S's 28x28x64 5x5 start dw, 1.25M: benches/results/ab-builds-bf16-start-dw-once-*.json; its 14x14 and
// 7x7 ones, 150-170K, stay per slice).
bool start_dw_once_pays(const Geometry& g) {
  return g.ks > 0 && g.N * g.Hs * g.Ws * g.Cin * g.ks * g.ks >= (int64_t(1) << 18);
}

template <class KS, class E, class T>
void start_dw_once(const KS& uk, const Geometry& g, const Weights<KS>& wt, const E* x, T* S, int64_t sps,
                   int64_t threads) {
  const int64_t PX = g.H * g.W, PS = g.Hs * g.Ws;
  const int64_t bands = std::min(g.Hs, (threads + g.N - 1) / g.N);
  parallel_tasks(g.N * bands, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / bands, b = t % bands;
      const int64_t y0 = band_start(g.Hs, bands, b), y1 = band_start(g.Hs, bands, b + 1);
      uk.dw(g.Cin, int(g.ks), int(g.ss), x + n * PX * g.Cin, g.Cin, g.W * g.Cin, 0, g.H, g.W, wt.sw, g.Cin, wt.sb,
            Act::None, S + n * PS * sps + y0 * g.Ws * sps, sps, g.Ws * sps, y0, y1);
    }
  });
}

// ---- Several whole images per task: small planes, batch >= 2x threads ----
// A small plane's GEMMs are a few register tiles of rows, the last often short. Consecutive images' pixels
// are consecutive in NHWC, so G images make one G*P-row GEMM, and each task streams the weights once for them.

int64_t images_per_task(const Geometry& g, int64_t threads) {
  if (g.nb != 1 || g.sb != g.Ho) return 1;
  if (const char* e = std::getenv("MNV4_UIB_SPLIT")) {  // tests: force one schedule
    if (std::strcmp(e, "images") == 0) return std::min<int64_t>(g.N, 3);
    return 1;
  }
  const int64_t P = g.Ho * g.Wo, PS = g.Hs * g.Ws;
  int64_t G = 1;
  for (;;) {
    const int64_t G2 = G + 1;
    if ((g.N + G2 - 1) / G2 < threads || G2 * P > 128 || g.mid * G2 * (PS + (g.km ? P : 0)) > 256 * 1024) break;
    G = G2;
  }
  return G;
}

at::Tensor f32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

// A weight's fp32 data: read in place when it is fp32 and `in_place` (its strides are the layout the kernels
// read), else from `convert()`'s tensor, kept alive in `hold`. Decided on the tensor's fields alone, because
// the tensor ops this replaces (to, reshape, t, contiguous, each through the dispatcher) are a noticeable
// part of a small block's time when the caches are cold after the previous block. A bf16 / fp16 weight's
// conversion is cached per weight tensor (fp32_constant; `layout` names the converted form).
template <class Convert>
const float* f32_data(const at::Tensor& t, bool in_place, at::Tensor& hold, const char* layout,
                      const Convert& convert) {
  if (in_place && t.scalar_type() == at::kFloat) return t.data_ptr<float>();
  hold = fp32_constant(t, layout, convert);
  return hold.data_ptr<float>();
}
const float* f32_data(const at::Tensor& t, at::Tensor& hold) {
  return f32_data(t, t.is_contiguous(), hold, "f32", [&] { return f32(t); });
}

// Pixel stride (floats) of a scratch tile of c channels: c rounded up to whole 64-byte lines, plus a line
// when that makes an even number, so consecutive pixels fall in different L1 sets (a 1024-channel tile would
// have a 4 KB pixel stride: every pixel of a depthwise chunk in the same set).
template <class E>
inline int64_t tile_stride(int64_t c) {
  constexpr int64_t per_line = 64 / sizeof(E);
  if (c <= per_line) return c;
  int64_t lines = (c + per_line - 1) / per_line;
  if (lines % 2 == 0) ++lines;
  return lines * per_line;
}

// ---- Row bands: one task = image n, output rows [OY0, OY1), in steps of g.sb rows ----
// KS: the kernel set (kernel_set.h); E its elements in memory (x, out), T those of its tiles.
template <class KS, class E = typename KS::Elem, class T = typename KS::Tile>
void run_task_nhwc(const KS& uk, const Geometry& g, const Weights<KS>& wt, const E* x, E* out, int64_t n, int64_t OY0,
                   int64_t OY1, T* buf, const Sizes& z) {
  T* st = buf;
  T* et = st + z.s;
  T* mt = et + z.e;
  const int64_t sps = tile_stride<T>(g.Cin), eps = tile_stride<T>(g.mid);  // pixel strides of S and of E, M
  const int64_t ers = g.Ws * eps;                                           // row stride of the window
  const E* xn = x + n * g.H * g.W * g.Cin;
  int64_t ew0 = 0, ew1 = 0;
  for (int64_t oy0 = OY0; oy0 < OY1; oy0 += g.sb) {
    const int64_t oy1 = std::min(OY1, oy0 + g.sb);
    int64_t e0, e1;
    expanded_rows(g, oy0, oy1, e0, e1);
    advance_window(e0, ew0, ew1, [&](int64_t drop, int64_t keep) {  // rows are contiguous: one move
      std::memmove(et, et + drop * ers, keep * ers * sizeof(T));
    });
    if (ew1 < e1) {  // compute expanded rows [ew1, e1)
      const int64_t n0 = ew1, pe = (e1 - n0) * g.Ws;
      auto expand = [&](const auto* S, int64_t s_ps) {
        uk.gemm(pe, g.mid, g.Cin, S, s_ps, wt.eB, 0, et + (n0 - ew0) * ers, eps, wt.eb, g.act, nullptr, 0);
      };
      if (g.ks) {
        int64_t r0, r1;
        input_rows(g, n0, e1, r0, r1);
        uk.dw(g.Cin, int(g.ks), int(g.ss), xn + r0 * g.W * g.Cin, g.Cin, g.W * g.Cin, r0, g.H, g.W, wt.sw, g.Cin,
              wt.sb, Act::None, st, sps, g.Ws * sps, n0, e1);
        expand(st, sps);
      } else {
        expand(xn + n0 * g.W * g.Cin, g.Cin);  // no start dw: expanded rows = input rows
      }
      ew1 = e1;
    }
    const int64_t po = (oy1 - oy0) * g.Wo;
    const T* Mp = et + (oy0 - ew0) * ers;  // no mid dw: output rows = expanded rows
    if (g.km) {
      uk.dw(g.mid, int(g.km), int(g.ms), et, eps, ers, ew0, g.Hs, g.Ws, wt.mw, g.mid, wt.mb, g.act, mt, eps,
            g.Wo * eps, oy0, oy1);
      Mp = mt;
    }
    // residual => stride 1, Cin == Cout, W == Wo: x's pixels line up with the output's
    const E* R = g.residual ? xn + oy0 * g.W * g.Cin : nullptr;
    uk.gemm(po, g.Cout, g.mid, Mp, eps, wt.pB, 0, out + (n * g.Ho + oy0) * g.Wo * g.Cout, g.Cout, wt.pb, Act::None, R,
            g.Cin);
  }
}

template <class T>  // tiles' elements
Sizes scratch_sizes_nhwc(const Geometry& g) {
  Sizes z{};
  z.s = g.ks ? lines_of<T>(g.cap_e * g.Ws * tile_stride<T>(g.Cin)) : 0;
  z.e = lines_of<T>(g.cap_e * g.Ws * tile_stride<T>(g.mid));
  z.m = g.km ? lines_of<T>(g.sb * g.Wo * tile_stride<T>(g.mid)) : 0;
  return z;
}

// The slab width of a packed 1x1 weight's columns (a GEMM's n0 must be a multiple of it).
template <class E>
int64_t slab_width(const LpBMat<E>& b) { return b.pack.nr; }
int64_t slab_width(const BMat& b) { return b.slab; }

// Mid-channel slices, mid-tensor form (bf16; see use_mid_split and the comment above it).
template <class KS, class E = typename KS::Elem, class T = typename KS::Tile>
void run_mid_tensor_nhwc(const KS& uk, const Geometry& g, const Weights<KS>& wt, const E* x, E* out,
                         int64_t threads) {
  const int64_t P = g.Ho * g.Wo, PS = g.Hs * g.Ws, PX = g.H * g.W;
  // Region 1: slices of whole slabs of the expand weight, per image as many as make the N * slices tasks a
  // multiple of the threads where that takes at most `threads` slices, else ceil(threads / N).
  const int64_t q = slab_width(wt.eB), qs = (g.mid + q - 1) / q;
  int64_t per = std::max<int64_t>(1, std::min((threads + g.N - 1) / g.N, qs));  // slices per image
  for (int64_t t = per; t <= std::min(threads, qs); ++t)
    if (g.N * t % threads == 0) {
      per = t;
      break;
    }
  const int64_t mc = (qs + per - 1) / per * q, slices = (g.mid + mc - 1) / mc;
  const int64_t sps = tile_stride<T>(g.Cin), cps = tile_stride<T>(mc), mps = tile_stride<T>(g.mid);
  // the mid tensor [N*P][mps] and the start dw's output [N*PS][sps] (Region 0: start_dw_once), in the calling
  // thread's arena (the tasks' own arenas hold their E tiles)
  const bool once = start_dw_once_pays(g);
  const int64_t zm = lines_of<T>(g.N * P * mps), zs = once ? lines_of<T>(g.N * PS * sps) : 0;
  T* const M = reinterpret_cast<T*>(call_scratch(((zm + zs) * int64_t(sizeof(T)) + 3) / 4));
  T* const S = M + zm;
  if (once) start_dw_once(uk, g, wt, x, S, sps, threads);
  const int64_t zst = g.ks && !once ? lines_of<T>(PS * sps) : 0, ze = g.km ? lines_of<T>(PS * cps) : 0;
  parallel_tasks(g.N * slices, [&](int64_t begin, int64_t end) {
    T* const st = task_scratch_of<T>(zst + ze);
    T* const et = st + zst;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / slices, m0 = (t % slices) * mc, cm = std::min(g.mid, m0 + mc) - m0;
      const E* X = x + n * PX * g.Cin;
      T* const Mn = M + n * P * mps + m0;
      auto expand_mid = [&](const auto* S, int64_t s_ps) {
        if (g.km) {
          uk.gemm(PS, cm, g.Cin, S, s_ps, wt.eB, m0, et, cps, wt.eb + m0, g.act, nullptr, 0);
          uk.dw(cm, int(g.km), int(g.ms), et, cps, g.Ws * cps, 0, g.Hs, g.Ws, wt.mw + m0, g.mid, wt.mb + m0, g.act,
                Mn, mps, g.Wo * mps, 0, g.Ho);
        } else {  // no mid dw: P == PS, the expand writes the mid tensor
          uk.gemm(PS, cm, g.Cin, S, s_ps, wt.eB, m0, Mn, mps, wt.eb + m0, g.act, nullptr, 0);
        }
      };
      if (once) {
        expand_mid(S + n * PS * sps, sps);
      } else if (g.ks) {
        uk.dw(g.Cin, int(g.ks), int(g.ss), X, g.Cin, g.W * g.Cin, 0, g.H, g.W, wt.sw, g.Cin, wt.sb, Act::None, st, sps,
              g.Ws * sps, 0, g.Hs);
        expand_mid(st, sps);
      } else {
        expand_mid(X, g.Cin);  // no start dw: PS == PX
      }
    }
  });
  // Region 2: the [N*P] x Cout projection (the images' pixels are consecutive in M, x and the output alike;
  // residual => stride 1, Cin == Cout: x's pixels line up with the output's), in blocks of whole register
  // tiles of pixels or whole column slabs: the split whose busiest thread has fewer tiles x slabs (columns on
  // a tie: each thread then streams only its columns of the weight).
  const int64_t NP = g.N * P, mr = std::max(1, int(uk.mr())), nr = slab_width(wt.pB);
  const int64_t tiles = (NP + mr - 1) / mr, slabs = (g.Cout + nr - 1) / nr;
  const int64_t tiles_per = (tiles + threads - 1) / threads, slabs_per = (slabs + threads - 1) / threads;
  const bool by_cols = slabs > 1 && tiles * slabs_per <= tiles_per * slabs;
  const int64_t step = by_cols ? slabs_per * nr : tiles_per * mr;
  parallel_tasks(((by_cols ? g.Cout : NP) + step - 1) / step, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (by_cols) {
        const int64_t c0 = t * step, nc = std::min(g.Cout, c0 + step) - c0;
        uk.gemm(NP, nc, g.mid, M, mps, wt.pB, c0, out + c0, g.Cout, wt.pb + c0, Act::None,
                g.residual ? x + c0 : nullptr, g.Cin);
      } else {
        const int64_t p0 = t * step, np = std::min(NP, p0 + step) - p0;
        uk.gemm(np, g.Cout, g.mid, M + p0 * mps, mps, wt.pB, 0, out + p0 * g.Cout, g.Cout, wt.pb, Act::None,
                g.residual ? x + p0 * g.Cin : nullptr, g.Cin);
      }
    }
  });
}

// fp32 mid-channel slices, partial-sum form: task = (image, slice [m0, m1)) through the projection's partial sum
// over its slice; slice 0's goes into the output with bias (+ x), the other slices' partials [P][Cout] are added
// by a second pass. In fp32 as fast as the mid-tensor form (run_mid_tensor_nhwc) with a mid dw, a little faster
// without one: there the mid-tensor form's projection reads the whole mid tensor, half of it from the
// other threads' caches, where this one reads only its slice and adds Cout-wide partials.
void run_mid_partial_nhwc(const KernelSet<float>& ks, const Geometry& g, const Weights<KernelSet<float>>& wt,
                          const float* x, float* out, int64_t threads) {
  const cpu::UKernels& uk = ks.uk;
  const int64_t T = std::max<int64_t>(1, std::min((threads + g.N - 1) / g.N, (g.mid + 7) / 8));
  const int64_t q = std::max<int64_t>(8, wt.eB.packed ? wt.eB.slab : 8);  // slices: whole slabs of packed B
  const int64_t mc = ((g.mid + T - 1) / T + q - 1) / q * q;
  const int64_t slices = (g.mid + mc - 1) / mc;
  const int64_t P = g.Ho * g.Wo, PS = g.Hs * g.Ws, PX = g.H * g.W;
  const int64_t sps = tile_stride<float>(g.Cin), cps = tile_stride<float>(mc);
  // Slice 0's projection goes straight into the output, with the bias and the residual; the other slices'
  // partials [P][Cout] per image into the calling thread's scratch, added to the output by a second pass.
  // (and the start dw's output [N*PS][sps], Region 0: start_dw_once)
  const bool once = start_dw_once_pays(g);
  const int64_t zp = lines16(g.N * (slices - 1) * P * g.Cout), zso = once ? lines16(g.N * PS * sps) : 0;
  float* const partial = call_scratch(zp + zso);
  float* const S_all = partial + zp;
  if (once) start_dw_once(ks, g, wt, x, S_all, sps, threads);
  const int64_t zs = g.ks && !once ? lines16(PS * sps) : 0, ze = lines16(PS * cps);
  const int64_t zm = g.km ? lines16(P * cps) : 0;
  at::parallel_for(0, g.N * slices, 1, [&](int64_t begin, int64_t end) {
    float *st = task_scratch(zs + ze + zm), *et = st + zs, *mt = et + ze;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / slices, m0 = (t % slices) * mc, cm = std::min(g.mid, m0 + mc) - m0;
      const float* X = x + n * PX * g.Cin;
      const float* S = X;
      int64_t s_ps = g.Cin;
      if (once) {
        S = S_all + n * PS * sps;
        s_ps = sps;
      } else if (g.ks) {
        uk.dwconv_nhwc(g.Cin, int(g.ks), int(g.ss), X, g.Cin, g.W * g.Cin, 0, g.H, g.W, wt.sw, g.Cin, wt.sb,
                       Act::None, st, sps, g.Ws * sps, 0, g.Hs);
        S = st;
        s_ps = sps;
      }
      gemm_b(uk, PS, cm, g.Cin, S, s_ps, wt.eB, 0, m0, et, cps, wt.eb + m0, g.act, nullptr, 0);
      const float* Mt = et;  // no mid dw: P == PS
      if (g.km) {
        uk.dwconv_nhwc(cm, int(g.km), int(g.ms), et, cps, g.Ws * cps, 0, g.Hs, g.Ws, wt.mw + m0, g.mid, wt.mb + m0,
                       g.act, mt, cps, g.Wo * cps, 0, g.Ho);
        Mt = mt;
      }
      if (m0 == 0)
        gemm_b(uk, P, g.Cout, cm, Mt, cps, wt.pB, 0, 0, out + n * P * g.Cout, g.Cout, wt.pb, Act::None,
               g.residual ? X : nullptr, g.Cin);
      else
        gemm_b(uk, P, g.Cout, cm, Mt, cps, wt.pB, m0, 0, partial + (t - n - 1) * P * g.Cout, g.Cout, nullptr,
               Act::None, nullptr, 0);
    }
  });
  if (slices == 1) return;
  at::parallel_for(0, g.N * P, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {  // i = n * P + pixel
      const int64_t n = i / P, q = i % P;
      const float* p1 = partial + (n * (slices - 1) * P + q) * g.Cout;
      float* o = out + i * g.Cout;
      for (int64_t sl = 0; sl < slices - 1; ++sl)
        for (int64_t c = 0; c < g.Cout; ++c) o[c] += p1[sl * P * g.Cout + c];
    }
  });
}

// Several whole images per task (see images_per_task): their pixels are consecutive in NHWC, so both GEMMs
// run over all of them at once; the dw convs go image by image.
template <class KS, class E = typename KS::Elem, class T = typename KS::Tile>
void run_images_nhwc(const KS& uk, const Geometry& g, const Weights<KS>& wt, const E* x, E* out, int64_t n0,
                     int64_t n1, T* buf) {
  const int64_t G = n1 - n0, PX = g.H * g.W, PS = g.Hs * g.Ws, P = g.Ho * g.Wo;
  const int64_t sps = tile_stride<T>(g.Cin), eps = tile_stride<T>(g.mid);
  T* st = buf;
  T* et = st + (g.ks ? lines_of<T>(G * PS * sps) : 0);
  T* mt = et + lines_of<T>(G * PS * eps);
  const E* X = x + n0 * PX * g.Cin;
  if (g.ks) {
    for (int64_t i = 0; i < G; ++i)
      uk.dw(g.Cin, int(g.ks), int(g.ss), X + i * PX * g.Cin, g.Cin, g.W * g.Cin, 0, g.H, g.W, wt.sw, g.Cin, wt.sb,
            Act::None, st + i * PS * sps, sps, g.Ws * sps, 0, g.Hs);
    uk.gemm(G * PS, g.mid, g.Cin, st, sps, wt.eB, 0, et, eps, wt.eb, g.act, nullptr, 0);
  } else {  // no start dw: PS == PX
    uk.gemm(G * PS, g.mid, g.Cin, X, g.Cin, wt.eB, 0, et, eps, wt.eb, g.act, nullptr, 0);
  }
  const T* Mp = et;  // no mid dw: P == PS
  if (g.km) {
    for (int64_t i = 0; i < G; ++i)
      uk.dw(g.mid, int(g.km), int(g.ms), et + i * PS * eps, eps, g.Ws * eps, 0, g.Hs, g.Ws, wt.mw, g.mid, wt.mb, g.act,
            mt + i * P * eps, eps, g.Wo * eps, 0, g.Ho);
    Mp = mt;
  }
  uk.gemm(G * P, g.Cout, g.mid, Mp, eps, wt.pB, 0, out + n0 * P * g.Cout, g.Cout, wt.pb, Act::None,
          g.residual ? X : nullptr, g.Cin);
}

template <class T>  // tiles' elements
int64_t images_scratch_nhwc(const Geometry& g, int64_t G) {
  const int64_t PS = g.Hs * g.Ws, P = g.Ho * g.Wo;
  return (g.ks ? lines_of<T>(G * PS * tile_stride<T>(g.Cin)) : 0) + lines_of<T>(G * PS * tile_stride<T>(g.mid)) +
         (g.km ? G * P * tile_stride<T>(g.mid) : 0);
}

// A 1x1 weight [O, I, 1, 1] as the fp32 matrix [I][O], or a depthwise weight [C, 1, k, k] as [k*k][C]: in
// place when the tensor is stored that way (fuse() lays out CPU weights so: a transposed view with the
// torch shape), else a transposed copy made here, per call.
at::Tensor nhwc_weight(const at::Tensor& w) {
  at::Tensor t = w.to(at::kFloat).reshape({w.size(0), -1}).t();
  return t.is_contiguous() ? t : t.contiguous();
}

// Whether a depthwise weight [C, 1, k, k] is stored as [k*k][C] (nhwc_weight's view, no copy needed).
bool dw_stored_kc(const at::Tensor& w) {
  const int64_t C = w.size(0), k = w.size(3);
  return (C == 1 || w.stride(0) == 1) && (k == 1 || (w.stride(3) == C && w.stride(2) == k * C));
}

template <class KS, class E = typename KS::Elem, class T = typename KS::Tile>
void uib_nhwc(const KS& uk, const Geometry& g, const at::Tensor& xf, at::Tensor& out,
              const c10::optional<at::Tensor>& start_dw_w,
              const c10::optional<at::Tensor>& start_dw_b, const at::Tensor& expand_w, const at::Tensor& expand_b,
              const c10::optional<at::Tensor>& mid_dw_w, const c10::optional<at::Tensor>& mid_dw_b,
              const at::Tensor& proj_w, const at::Tensor& proj_b) {
  at::Tensor sw, sb, mw, mb, eb, pb;  // conversions, where the tensors cannot be read in place
  auto dw = [](const at::Tensor& w, at::Tensor& hold) {
    return f32_data(w, dw_stored_kc(w), hold, "f32_kc", [&] { return nhwc_weight(w); });
  };
  // The 1x1 weights packed in slabs of the running table's column tile, cached per weight tensor; without a
  // cache entry (inference tensors) fp32 reads them in place as [K][N] (nhwc_weight), bf16 packs them per call.
  const auto eo = uk.operand(expand_w, 1, g.Cin, g.mid, [&] { return nhwc_weight(expand_w); });
  const auto po = uk.operand(proj_w, 1, g.mid, g.Cout, [&] { return nhwc_weight(proj_w); });
  Weights<KS> wt{g.ks ? dw(*start_dw_w, sw) : nullptr,
             g.ks ? f32_data(*start_dw_b, sb) : nullptr,
             f32_data(expand_b, eb),
             g.km ? dw(*mid_dw_w, mw) : nullptr,
             g.km ? f32_data(*mid_dw_b, mb) : nullptr,
             f32_data(proj_b, pb),
             eo.mat,
             po.mat};
  const E* xp = KS::data(xf);
  E* op = KS::data(out);
  const int64_t threads = at::get_num_threads();
  const int64_t G = images_per_task(g, threads);
  if (G > 1) {
    const int64_t zt = images_scratch_nhwc<T>(g, G);
    parallel_tasks((g.N + G - 1) / G, [&](int64_t begin, int64_t end) {
      T* const sp = task_scratch_of<T>(zt);
      for (int64_t t = begin; t < end; ++t)
        run_images_nhwc(uk, g, wt, xp, op, t * G, std::min(g.N, (t + 1) * G), sp);
    });
    return;
  }
  if (use_mid_split(g, threads)) {
    if constexpr (std::is_same_v<KS, KernelSet<float>>)
      return run_mid_partial_nhwc(uk, g, wt, xp, op, threads);
    else
      return run_mid_tensor_nhwc(uk, g, wt, xp, op, threads);
  }
  const Sizes z = scratch_sizes_nhwc<T>(g);
  parallel_tasks(g.N * g.nb, [&](int64_t begin, int64_t end) {
    T* const sp = task_scratch_of<T>(z.total());
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / g.nb, oy0 = (t % g.nb) * g.bh;
      run_task_nhwc(uk, g, wt, xp, op, n, oy0, std::min(g.Ho, oy0 + g.bh), sp, z);
    }
  });
}

// The op on kernel set KS (element type E = KS::Elem): x converted to channels_last E at entry (a no-op for a
// channels_last E tensor), the result in E, channels_last.
template <class KS>
at::Tensor uib_run(Geometry& g, const at::Tensor& x, const c10::optional<at::Tensor>& start_dw_w,
                   const c10::optional<at::Tensor>& start_dw_b, const at::Tensor& expand_w, const at::Tensor& expand_b,
                   const c10::optional<at::Tensor>& mid_dw_w, const c10::optional<at::Tensor>& mid_dw_b,
                   const at::Tensor& proj_w, const at::Tensor& proj_b) {
  const KS uk;
  plan(g, at::get_num_threads(), uk.mr());
  const at::Tensor xe = x.to(KS::dtype).contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({g.N, g.Cout, g.Ho, g.Wo},
                             x.options().dtype(KS::dtype).memory_format(at::MemoryFormat::ChannelsLast));
  uib_nhwc(uk, g, xe, out, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w, proj_b);
  return out;
}

}  // namespace

at::Tensor uib_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& start_dw_w,
                   const c10::optional<at::Tensor>& start_dw_b, const at::Tensor& expand_w, const at::Tensor& expand_b,
                   const c10::optional<at::Tensor>& mid_dw_w, const c10::optional<at::Tensor>& mid_dw_b,
                   const at::Tensor& proj_w, const at::Tensor& proj_b, int64_t stride, bool residual,
                   std::string activation) {
  Geometry g{make_uib_params(x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w, proj_b,
                             stride, residual, activation)};
  const auto fmt = g.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (g.N == 0) return at::empty({0, g.Cout, g.Ho, g.Wo}, x.options().memory_format(fmt));
  at::Tensor out = with_kernel_set<kTakesWidening | kTakesF16>(x.scalar_type(), [&](auto ks) {
    return uib_run<decltype(ks)>(g, x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w, proj_b);
  });
  // NCHW result: a fresh contiguous tensor (out may already count as contiguous when Cout == 1, Ho*Wo == 1,
  // but with other strides than the fake kernel's)
  if (!g.channels_last) return at::empty(out.sizes(), x.options().memory_format(fmt)).copy_(out);
  return out.scalar_type() == x.scalar_type() ? out : out.to(x.scalar_type());
}

TORCH_LIBRARY_IMPL(mnv4, CPU, m) { m.impl("uib", &uib_cpu); }

}  // namespace mnv4
