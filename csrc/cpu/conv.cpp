// mnv4_cpu::conv: a dense k x k convolution + bias + activation on the CPU, optionally followed by a 1x1
// projection (+ bias, + activation, + residual) in the same pass: the stem and `cn` convs of the fused
// models, their FusedIB blocks (conv_exp + act -> conv_pwl) with the expanded tensor never written out, and
// (through mnv4_cpu::sequence) Conv-S's k x k `cn` conv with the 1x1 `cn` conv after it. A CPU-only helper
// op, not part of the mnv4 op contract.
//
//   h = act(conv2d(x, weight, bias, stride, padding = k // 2))        weight [O, C, k, k], k odd
//   y = h                          without proj_weight
//   y = proj_act(conv2d(h, proj_weight, proj_bias))                   proj_weight [P, O, 1, 1]
//   y = y + x                      with residual (stride 1, y's channels == C)
// The output's memory format follows x's (as for uib), or is channels_last whatever x's with channels_last:
// the fused models' stems take the user's NCHW image and give the blocks channels_last activations.
//
// Schedule: tasks are (image, band of output rows); per output row one implicit-GEMM microkernel call
// (f32_conv_nhwc_fn: k shifted products, one per kernel row, with the weight as [ky][kx][C][O], summed in
// registers: no im2col) for the pixels whose window lies inside the image, reading x in place, and one per
// border run (left / right columns, whole top / bottom rows) reading a small zero-padded copy of its window.
// On a table whose products take k in blocks (uk.k_block(): AMX, 32) a window that fits one block (the
// 3-channel 3x3 stems: 27 values) runs instead as one product of K = k_block per output row over an im2col copy
// of the row's windows (zero-padded, so the strips' NaN re-check covers its border pixels), not k partial blocks.
// The row goes to the output, or (projection) to a one-row scratch that the pointwise GEMM turns into the
// output row while it is in L1. Weights packed in column slabs once per weight tensor (weight_cache.h).
// A channels_last x is read in place; any other x as NCHW, each task converting the input rows of its band to
// NHWC in its scratch: the stems take the user's NCHW image, and converting band by band in the tasks is
// cheaper than a whole-tensor conversion pass before the conv (benches/kernels_cpu.py, section 4). Reading x
// in place rather than copying whole padded row bands saves a pass over the input.
// Element types: as uib.cpp, one schedule templated on the kernel set (kernel_set.h): E = KS::Elem for x and
// the output, T = KS::Tile for the input rows the conv reads (band), its strips and the projection's row.
// fp32: KernelSet<float>. bf16 x, in two forms by the running bf16 table (MNV4_CPU_LP_ISA forces it):
//  * a table with a bf16 dot product (avx512bf16, amx, neon_bf16, ...): KernelSet<bf16_t>, the bf16 kernels
//    with bf16 input rows, strips, projection row and output (fp32 biases, fp32 sums), the k x k weight packed
//    in bf16 per kernel row (T = k taps of k * C). Rounded to bf16: the conv's output (the projection's input)
//    and the result.
//  * a convert-on-load table (cpu::lp_convert_on_load: avx512, avx2, neon, scalar): WideningKernelSet, the
//    fp32 kernels (MNV4_CPU_ISA) with both weights packed in fp32 from their bf16 values (exact). x's input
//    rows are widened once per band into the task's scratch (an NCHW x while converting to NHWC; a
//    channels_last x too, rather than read in place), the conv's row and the projection's input stay fp32,
//    and only the result is rounded to bf16, once, after the bias, activation and residual (added in fp32).
//    One rounding where the first form has two (with a projection); the fp32 op's cost plus the conversions.
// fp16 x: KernelSet<f16_t> as the first bf16 form where the f16 table has fp16 arithmetic (neon_fp16), else
// computed in fp32 (converted on entry, the result converted back): kernel_set.h's with_kernel_set.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
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

#if defined(__x86_64__) && (defined(__clang__) || __GNUC__ >= 12)
#define MNV4_CONV_RGB_AVX512 1
// Three NCHW planes (a, a + cs, a + 2 * cs) of n pixels interleaved into n NHWC pixels at d, 64 bytes of each
// plane at a time (U: the element's bits, 4 or 2 bytes): per block three loads, six two-source shuffles
// (vpermt2d / vpermt2w) and three stores, where the scalar loop stores element by element (a sizeable part of a
// stem's time). Returns the pixels done (n rounded down to a whole block); the caller converts the rest. Pure
// bit moves: exact for every value.
template <int L>
constexpr int rgb_ab(int q, int l) {  // output lane l of block q: its plane 0 / 1 element, from (a, b)
  const int j = q * L + l;
  return j % 3 == 0 ? j / 3 : j % 3 == 1 ? L + j / 3 : 0;
}
template <int L>
constexpr int rgb_c(int q, int l) {  // the same lane from (that, c): plane 2's element, else kept
  const int j = q * L + l;
  return j % 3 == 2 ? L + j / 3 : l;
}
template <class U, size_t... l>
[[gnu::always_inline]] inline void rgb_block(const void* a, const void* b, const void* c, void* d,
                                             std::index_sequence<l...>) {
  constexpr int L = sizeof...(l);
  typedef U V __attribute__((vector_size(L * sizeof(U))));
  V va, vb, vc;
  std::memcpy(&va, a, sizeof(V));
  std::memcpy(&vb, b, sizeof(V));
  std::memcpy(&vc, c, sizeof(V));
  const V t0 = __builtin_shufflevector(va, vb, rgb_ab<L>(0, l)...);
  const V t1 = __builtin_shufflevector(va, vb, rgb_ab<L>(1, l)...);
  const V t2 = __builtin_shufflevector(va, vb, rgb_ab<L>(2, l)...);
  const V o[3] = {__builtin_shufflevector(t0, vc, rgb_c<L>(0, l)...),
                  __builtin_shufflevector(t1, vc, rgb_c<L>(1, l)...),
                  __builtin_shufflevector(t2, vc, rgb_c<L>(2, l)...)};
  std::memcpy(d, o, sizeof(o));
}
template <class U>
[[gnu::always_inline]] inline int64_t rgb_interleave(const void* a, int64_t cs, int64_t n, void* d) {
  constexpr int64_t L = 64 / sizeof(U);
  const U* pa = static_cast<const U*>(a);
  U* pd = static_cast<U*>(d);
  int64_t i = 0;
  for (; i + L <= n; i += L, pa += L, pd += 3 * L)
    rgb_block<U>(pa, pa + cs, pa + 2 * cs, pd, std::make_index_sequence<L>{});
  return i;
}
[[gnu::target("avx512f,avx512bw")]] int64_t rgb_interleave_x32_avx512(const void* a, int64_t cs, int64_t n, void* d) {
  return rgb_interleave<uint32_t>(a, cs, n, d);
}
[[gnu::target("avx512f,avx512bw")]] int64_t rgb_interleave_x16_avx512(const void* a, int64_t cs, int64_t n, void* d) {
  return rgb_interleave<uint16_t>(a, cs, n, d);
}
// The AVX-512 interleave where the fp32 kernel table is the AVX-512 one (MNV4_CPU_ISA forcing another table
// turns it off too) and the CPU has AVX512BW (vpermt2w).
bool rgb_avx512() {
  static const bool yes = cpu::ukernels().isa == cpu::Isa::Avx512 && __builtin_cpu_supports("avx512bw");
  return yes;
}
#endif

// An element as fp32 (exact), and an fp32 value as element type D (bf16 / fp16: rounded to nearest even; both
// through ukernels_bf16.h's to_f32 / from_f32).
inline float as_f(float v) { return v; }
template <class E>
inline float as_f(E v) {
  return cpu::to_f32(v);
}
template <class D>
D of_f(float v) {
  if constexpr (std::is_same<D, float>::value)
    return v;
  else
    return cpu::from_f32<D>(v);
}

// Rows [r0, r1) of one image of an NCHW tensor (C planes of H x W) as NHWC rows at dst (W * C elements each),
// in blocks of 16 pixels: C input lines read, 16 * C contiguous elements written. S -> D: the same type, or
// bf16 -> fp32 (widened, exact).
template <class S, class D>
void nchw_rows_to_nhwc_any(const S* src, int64_t C, int64_t H, int64_t W, int64_t r0, int64_t r1, D* dst) {
  for (int64_t y = r0; y < r1; ++y) {
    D* d = dst + (y - r0) * W * C;
    for (int64_t x0 = 0; x0 < W; x0 += 16) {
      const int64_t x1 = std::min(W, x0 + 16);
      for (int64_t c = 0; c < C; ++c) {
        const S* sc = src + (c * H + y) * W;
        for (int64_t xx = x0; xx < x1; ++xx) {
          if constexpr (std::is_same<S, D>::value)
            d[xx * C + c] = sc[xx];
          else
            d[xx * C + c] = as_f(sc[xx]);
        }
      }
    }
  }
}

// The same; three channels (the stems' image) through the AVX-512 interleave where there is one.
template <class E>
void nchw_rows_to_nhwc(const E* src, int64_t C, int64_t H, int64_t W, int64_t r0, int64_t r1, E* dst) {
#ifdef MNV4_CONV_RGB_AVX512
  if (C == 3 && rgb_avx512()) {  // the rows of a band are contiguous in each plane
    const int64_t n = (r1 - r0) * W;
    const E* a = src + r0 * W;
    const int64_t done = sizeof(E) == 4 ? rgb_interleave_x32_avx512(a, H * W, n, dst)
                                        : rgb_interleave_x16_avx512(a, H * W, n, dst);
    for (int64_t i = done; i < n; ++i)
      for (int64_t c = 0; c < 3; ++c) dst[i * 3 + c] = a[c * H * W + i];
    return;
  }
#endif
  nchw_rows_to_nhwc_any(src, C, H, W, r0, r1, dst);
}

// The same from bf16 planes to fp32 NHWC rows (widened while converting): the AVX-512 interleave of three
// channels in bf16 into an L1-sized chunk, then widened from there.
void nchw_rows_to_nhwc_widen(const cpu::bf16_t* src, int64_t C, int64_t H, int64_t W, int64_t r0, int64_t r1,
                             float* dst, const Bf16Rows& cv) {
#ifdef MNV4_CONV_RGB_AVX512
  if (C == 3 && rgb_avx512()) {
    constexpr int64_t chunk = 512;  // pixels, a multiple of the interleave's block
    alignas(64) cpu::bf16_t tmp[3 * chunk];
    const int64_t n = (r1 - r0) * W;
    const cpu::bf16_t* a = src + r0 * W;
    int64_t i = 0;
    while (i < n) {
      const int64_t done = rgb_interleave_x16_avx512(a + i, H * W, std::min(chunk, n - i), tmp);
      if (done == 0) break;
      cv.widen(1, 3 * done, tmp, 0, dst + 3 * i, 0);
      i += done;
    }
    for (; i < n; ++i)
      for (int64_t c = 0; c < 3; ++c) dst[i * 3 + c] = as_f(a[c * H * W + i]);
    return;
  }
#endif
  (void)cv;
  nchw_rows_to_nhwc_any(src, C, H, W, r0, r1, dst);
}

// im2col: n windows' rows of KC elements, window i from s + i * step to d + i * ld. KC a compile-time constant
// (the stems' 3 x 3 x 3: 9 per kernel row) makes each a fixed-size copy (a 16-byte and a 2-byte move for 9
// bf16); other lengths copy element by element.
template <int KC, class T>
void copy_windows_n(T* d, int64_t ld, const T* s, int64_t step, int64_t n) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(d + i * ld, s + i * step, KC * sizeof(T));
}
template <class T>
void copy_windows(T* d, int64_t ld, const T* s, int64_t step, int64_t n, int64_t kc) {
  switch (kc) {
    case 3: return copy_windows_n<3>(d, ld, s, step, n);
    case 5: return copy_windows_n<5>(d, ld, s, step, n);
    case 6: return copy_windows_n<6>(d, ld, s, step, n);
    case 9: return copy_windows_n<9>(d, ld, s, step, n);
    default:
      for (int64_t i = 0; i < n; ++i) std::copy(s + i * step, s + i * step + kc, d + i * ld);
  }
}

// Whether every element of w is finite: NaN and the infinities are the values whose exponent bits are all
// set, so one pass over the bits of w's storage (any dense layout: the order does not matter) whose OR-reduction
// vectorises. Weights of a few thousand elements take well under a microsecond.
template <class U>
bool bits_all_finite(const void* data, int64_t n, U exp_mask) {
  const U* p = static_cast<const U*>(data);
  U bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= U((p[i] & exp_mask) == exp_mask);
  return bad == 0;
}
bool all_finite(const at::Tensor& w) {
  const at::Tensor t = w.is_non_overlapping_and_dense() ? w : w.contiguous();
  switch (t.scalar_type()) {
    case at::kFloat: return bits_all_finite<uint32_t>(t.data_ptr(), t.numel(), 0x7f800000u);
    case at::kBFloat16: return bits_all_finite<uint16_t>(t.data_ptr(), t.numel(), uint16_t(0x7f80));
    case at::kHalf: return bits_all_finite<uint16_t>(t.data_ptr(), t.numel(), uint16_t(0x7c00));
    default: return bits_all_finite<uint32_t>(t.to(at::kFloat).contiguous().data_ptr(), t.numel(), 0x7f800000u);
  }
}

// The op on kernel set KS (kernel_set.h): x and the result in E = KS::Elem (the result channels_last), the
// input rows the conv reads, its strips and the projection's row in T = KS::Tile.
template <class KS>
at::Tensor conv_run(const ConvParams& cp, const at::Tensor& x, const at::Tensor& weight,
                    const c10::optional<at::Tensor>& bias, int64_t stride, const c10::optional<at::Tensor>& proj_weight,
                    const c10::optional<at::Tensor>& proj_bias, bool residual) {
  using E = typename KS::Elem;
  using T = typename KS::Tile;
  constexpr bool widens = !std::is_same<E, T>::value;  // WideningKernelSet: x's rows widened per band
  const int64_t N = cp.N, C = cp.C, H = cp.H, W = cp.W, O = cp.O, k = cp.k, p = k / 2, P = cp.P, Ho = cp.Ho,
                Wo = cp.Wo;
  at::Tensor out =
      at::empty({N, P, Ho, Wo}, x.options().dtype(KS::dtype).memory_format(at::MemoryFormat::ChannelsLast));
  if (N > 0) {
    // x is read in place when its E data is channels_last (and E is T); otherwise from an NCHW E tensor, whose
    // input rows each task converts to NHWC itself (see the tasks below), or (E is not T) from channels_last
    // rows each task widens.
    at::Tensor xf = x.to(KS::dtype);
    const bool nchw = !xf.is_contiguous(at::MemoryFormat::ChannelsLast);
    if (nchw) xf = xf.contiguous();
    const KS uk;
    const int64_t Kt = k * k * C;
    // A window of at most one tile product's k (uk.k_block(): the stems' 3 x 3 x 3 = 27 on the AMX tables' 32)
    // runs as one product of K = k_block per pixel over an im2col row (the window's values in [ky][kx][c]
    // order, zero outside the image and past Kt), where k taps of K = k * C would each be a partial block.
    const int64_t kb = uk.k_block();
    const bool im2col = kb > 0 && k > 1 && Kt <= kb;
    // [ky][kx][C][O] as k taps (kernel rows) of k * C rows (im2col: one tap of kb rows, zero past Kt): a view
    // of a weight stored output-channel innermost (ops.channels_innermost)
    const auto wo = uk.operand(weight, im2col ? 1 : int(k), im2col ? kb : k * C, O, [&] {
      const at::Tensor kn = weight.to(at::kFloat).permute({2, 3, 1, 0}).reshape({Kt, O});
      if (!im2col) return kn.contiguous();
      at::Tensor padded = at::zeros({kb, O}, kn.options());
      padded.narrow(0, 0, Kt).copy_(kn);
      return padded;
    });
    const auto po = proj_weight.has_value() ? uk.operand(*proj_weight, 1, O, P, [&] {
      return proj_weight->to(at::kFloat).reshape({P, O}).t().contiguous();
    }) : typename KS::Operand{};
    const auto& wb = wo.mat;
    // fp32 biases (a bf16 model's converted once: fp32_constant)
    auto f32_bias = [](const c10::optional<at::Tensor>& b) {
      return b.has_value() ? fp32_constant(*b, "f32", [&] { return b->to(at::kFloat).contiguous(); }) : at::Tensor();
    };
    const at::Tensor bf = f32_bias(bias), pbf = f32_bias(proj_bias);
    const float* bp = bias.has_value() ? bf.data_ptr<float>() : nullptr;
    const float* pbp = proj_bias.has_value() ? pbf.data_ptr<float>() : nullptr;
    const E* xp = KS::data(xf);
    E* op = KS::data(out);
    const cpu::Act a = cp.act, pa = cp.proj_act;
    // Output pixels whose k x k window lies inside the image read x in place (taps (ky*W + kx)*C apart);
    // the others (the border: rows oy < oy_lo or >= oy_hi, columns ox < ox_lo or >= ox_hi) read a
    // zero-padded copy of their window (a "strip", per thread).
    // The border's NaN re-check (fix_nan in the tasks) matters only where a weight is NaN or infinite.
    const bool finite_weights = all_finite(weight);
    const int64_t oy_lo = (p + stride - 1) / stride, oy_hi = std::max(oy_lo, (H - 1 - p) / stride + 1);
    const int64_t ox_lo = std::min(Wo, (p + stride - 1) / stride);
    const int64_t ox_hi = std::max(ox_lo, std::min(Wo, (W - 1 - p) / stride + 1));
    // A short last register tile in the interior run (112 -> 56, stride 2: 55 = 7 x 7 + 6 pixels) and a
    // one-pixel strip tile cost nearly two tiles: the left border's strip takes the interior's remainder.
    const int64_t mr = std::max(1, uk.mr());
    const int64_t ox_in = ox_lo > 0 ? std::min(ox_hi, ox_lo + (ox_hi - ox_lo) % mr) : ox_lo;
    // The microkernel's taps are the kernel's rows: row ky's k taps of one output pixel are k * C contiguous
    // floats (k neighbouring pixels), so each tap is one K = k * C product (B's rows [ky][kx][C] in order).
    // Stem, 3 input channels: 27 products of K = 1 would be 3 of K = 9 (lda = 6 at stride 2: the microkernels run
    // that shape on a taller tile compiled for it, simd_impl.h's StemShape).
    std::vector<int64_t> off_in(static_cast<size_t>(k));
    for (int64_t ky = 0; ky < k; ++ky) off_in[ky] = ky * W * C;
    // Tasks: (image, band of output rows), 4 per thread when there are enough rows; with one image, a multiple
    // of the threads. The bands are even shares (tasks.h band_start), each at most RB rows (28 rows on 2
    // threads: 14 rows per thread, where 3-row bands gave one thread 15 and the other 13:
    // benches/results/ab-builds-*-conv-bands-*).
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t RB = std::max<int64_t>(1, std::min(Ho, (N * Ho) / (4 * threads)));
    int64_t nb = (Ho + RB - 1) / RB;
    if (N == 1 && nb % threads) nb = std::min(Ho, (nb + threads - 1) / threads * threads);
    // NCHW x or widened x: a task's input rows, as NHWC T rows (at most band_rows rows of W * C elements)
    const int64_t band_rows = nchw || widens ? std::min(H, (RB - 1) * stride + k) : 0;
    parallel_tasks(N * nb, [&](int64_t t0, int64_t t1) {
      thread_local std::vector<int64_t> off_strip;
      off_strip.resize(static_cast<size_t>(k));
      // task scratch: the projection's one-row output (hid), the NHWC input rows (NCHW x), then the strip (at
      // most a whole output row)
      const int64_t hid_elems = proj_weight.has_value() ? lines_of<T>(Wo * O) : 0;
      const int64_t band_elems = lines_of<T>(band_rows * W * C);
      const int64_t strip_elems = im2col ? Wo * kb : k * ((Wo - 1) * stride + k) * C;
      T* const hp = task_scratch_of<T>(hid_elems + band_elems + strip_elems);
      T* const band = hp + hid_elems;
      T* const strip = band + band_elems;  // or (im2col) the output row's im2col rows
      // the image's NHWC input rows: row iy at img + (iy - img_r0) * W * C
      const T* img = nullptr;
      int64_t img_r0 = 0;
      auto in_row = [&](int64_t iy) { return img + (iy - img_r0) * W * C; };
      // The strip's zero padding multiplies the weights of taps outside the image by 0: NaN for a NaN or
      // infinite weight, where torch's conv skips the tap. So a NaN border output of a channel with such a
      // weight is recomputed over the taps inside the image. With finite weights (finite_weights, checked once
      // per call) nothing is done; else the cost is a NaN scan of the border outputs.
      std::vector<char> nonfinite;  // per output channel: has a non-finite weight (set at the first NaN seen)
      auto fix_nan = [&](int64_t oy, int64_t e0, int64_t e1, auto* dst, int64_t ldd, const float* b, cpu::Act act_,
                         const T* r) {
        using D = std::remove_pointer_t<decltype(dst)>;
        if (finite_weights) return;
        bool any = false;
        for (int64_t e = 0; e < e1 - e0; ++e)
          for (int64_t o = 0; o < O; ++o) any |= std::isnan(as_f(dst[e * ldd + o]));
        if (!any) return;
        auto wv = [&](int64_t kk, int64_t o) { return KS::at(wb, kk, o); };
        if (nonfinite.empty()) {
          nonfinite.assign(static_cast<size_t>(O), 0);
          for (int64_t kk = 0; kk < Kt; ++kk)
            for (int64_t o = 0; o < O; ++o) nonfinite[o] |= !std::isfinite(wv(kk, o));
        }
        for (int64_t e = e0; e < e1; ++e)
          for (int64_t o = 0; o < O; ++o) {
            D& y = dst[(e - e0) * ldd + o];
            if (!nonfinite[o] || !std::isnan(as_f(y))) continue;
            float acc = b ? b[o] : 0.f;
            for (int64_t ky = 0; ky < k; ++ky) {
              const int64_t iy = oy * stride - p + ky;
              if (iy < 0 || iy >= H) continue;
              for (int64_t kx = 0; kx < k; ++kx) {
                const int64_t ix = e * stride - p + kx;
                if (ix < 0 || ix >= W) continue;
                for (int64_t c = 0; c < C; ++c)
                  acc += as_f(in_row(iy)[ix * C + c]) * wv((ky * k + kx) * C + c, o);
              }
            }
            y = of_f<D>(cpu::act_scalar(acc, act_) + (r ? as_f(r[(e - e0) * C + o]) : 0.f));
          }
      };
      // Output pixels [e0, e1) of row oy of image `img` -> dst (ldd floats per pixel), through a strip.
      auto border = [&](int64_t oy, int64_t e0, int64_t e1, auto* dst, int64_t ldd, const float* b, cpu::Act act_,
                        const T* r) {
        if (e1 <= e0) return;
        const int64_t ws = (e1 - 1 - e0) * stride + k, x0 = e0 * stride - p, y0 = oy * stride - p;
        for (int64_t ky = 0; ky < k; ++ky) {
          T* row = strip + ky * ws * C;
          const int64_t iy = y0 + ky;
          const int64_t c0 = std::max<int64_t>(0, -x0), c1 = (iy < 0 || iy >= H) ? 0 : std::min(ws, W - x0);
          if (c1 <= c0) {
            std::memset(row, 0, sizeof(T) * ws * C);  // +0 in fp32 and bf16
            continue;
          }
          std::memset(row, 0, sizeof(T) * c0 * C);
          std::memcpy(row + c0 * C, in_row(iy) + (x0 + c0) * C, sizeof(T) * (c1 - c0) * C);
          std::memset(row + c1 * C, 0, sizeof(T) * (ws - c1) * C);
        }
        for (int64_t ky = 0; ky < k; ++ky) off_strip[ky] = ky * ws * C;
        uk.conv(e1 - e0, O, k * C, static_cast<int>(k), off_strip.data(), strip, stride * C, wb, 0, dst, ldd, b, act_,
                r, C);
        fix_nan(oy, e0, e1, dst, ldd, b, act_, r);
      };
      // Output row oy's im2col rows -> strip: pixel ox's window at strip + ox * kb, kernel row ky's k * C values
      // at ky * k * C (contiguous in an NHWC input row where the window lies inside it, ox in [ox_lo, ox_hi)),
      // zeros outside the image; the zeros past Kt are written once per task (below).
      auto im2col_row = [&](int64_t oy) {
        const int64_t kc = k * C;
        for (int64_t ky = 0; ky < k; ++ky) {
          const int64_t iy = oy * stride - p + ky;
          T* const d = strip + ky * kc;
          if (iy < 0 || iy >= H) {
            for (int64_t ox = 0; ox < Wo; ++ox) std::fill(d + ox * kb, d + ox * kb + kc, T{});
            continue;
          }
          const T* const r = in_row(iy);
          auto edge = [&](int64_t ox) {  // a window that crosses the left or right edge
            for (int64_t kx = 0; kx < k; ++kx) {
              const int64_t ix = ox * stride - p + kx;
              T* const dk = d + ox * kb + kx * C;
              if (ix < 0 || ix >= W)
                std::fill(dk, dk + C, T{});
              else
                std::copy(r + ix * C, r + ix * C + C, dk);
            }
          };
          for (int64_t ox = 0; ox < ox_lo; ++ox) edge(ox);
          if (ox_hi > ox_lo)
            copy_windows(d + ox_lo * kb, kb, r + (ox_lo * stride - p) * C, stride * C, ox_hi - ox_lo, kc);
          for (int64_t ox = ox_hi; ox < Wo; ++ox) edge(ox);
        }
      };
      if (im2col)
        for (int64_t ox = 0; ox < Wo; ++ox) std::fill(strip + ox * kb + Kt, strip + (ox + 1) * kb, T{});
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / nb, oy0 = band_start(Ho, nb, t % nb), oy1 = band_start(Ho, nb, t % nb + 1);
        if (nchw || widens) {
          img_r0 = std::max<int64_t>(0, oy0 * stride - p);
          const int64_t r1 = std::min(H, (oy1 - 1) * stride - p + k);
          if constexpr (widens) {
            if (nchw)
              nchw_rows_to_nhwc_widen(xp + n * C * H * W, C, H, W, img_r0, r1, band, uk.cv);
            else
              uk.cv.widen(r1 - img_r0, W * C, xp + (n * H + img_r0) * W * C, W * C, band, W * C);
          } else {
            nchw_rows_to_nhwc(xp + n * C * H * W, C, H, W, img_r0, r1, band);
          }
          img = band;
        } else if constexpr (!widens) {
          img = xp + n * H * W * C;
        }
        // Output row oy -> crow (the output row itself, or (projection) the one-row scratch), with residual
        // rows crr (or nullptr)
        auto conv_row = [&](int64_t oy, auto* crow, const T* crr) {
          if (im2col) {
            im2col_row(oy);
            uk.gemm(Wo, O, kb, strip, kb, wb, 0, crow, O, bp, a, crr, C);
            // the zero-padded taps multiply non-finite weights on the border, as the strips' (fix_nan)
            if (oy < oy_lo || oy >= oy_hi) {
              fix_nan(oy, 0, Wo, crow, O, bp, a, crr);
            } else {
              fix_nan(oy, 0, ox_lo, crow, O, bp, a, crr);
              fix_nan(oy, ox_hi, Wo, crow + ox_hi * O, O, bp, a, crr ? crr + ox_hi * C : nullptr);
            }
            return;
          }
          if (oy < oy_lo || oy >= oy_hi) {
            border(oy, 0, Wo, crow, O, bp, a, crr);
          } else {
            border(oy, 0, ox_in, crow, O, bp, a, crr);
            if (ox_hi > ox_in)
              uk.conv(ox_hi - ox_in, O, k * C, static_cast<int>(k), off_in.data(),
                      in_row(oy * stride - p) + (ox_in * stride - p) * C, stride * C, wb, 0, crow + ox_in * O, O, bp,
                      a, crr ? crr + ox_in * C : nullptr, C);
            border(oy, ox_hi, Wo, crow + ox_hi * O, O, bp, a, crr ? crr + ox_hi * C : nullptr);
          }
        };
        for (int64_t oy = oy0; oy < oy1; ++oy) {
          E* orow = op + ((n * Ho + oy) * Wo) * P;
          const T* rrow = residual ? in_row(oy) : nullptr;  // stride 1: the same pixels
          if (proj_weight.has_value()) {
            conv_row(oy, hp, nullptr);
            uk.gemm(Wo, P, O, hp, O, po.mat, 0, orow, P, pbp, pa, rrow, C);
          } else {
            conv_row(oy, orow, rrow);
          }
        }
      }
    });
  }
  return out;
}

}  // namespace

at::Tensor conv_cpu(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                    int64_t stride, std::string activation, const c10::optional<at::Tensor>& proj_weight,
                    const c10::optional<at::Tensor>& proj_bias, bool residual, bool channels_last,
                    std::string proj_activation) {
  const ConvParams cp = make_conv_params(x, weight, bias, stride, activation, proj_weight, proj_bias, residual,
                                         channels_last, proj_activation);
  at::Tensor out = with_kernel_set<kTakesWidening | kTakesF16>(x.scalar_type(), [&](auto ks) {
    return conv_run<decltype(ks)>(cp, x, weight, bias, stride, proj_weight, proj_bias, residual);
  });
  if (!cp.channels_last)  // NCHW result (see pointwise.cpp)
    out = at::empty(out.sizes(), out.options().memory_format(at::MemoryFormat::Contiguous)).copy_(out);
  return out.scalar_type() == x.scalar_type() ? out : out.to(x.scalar_type());
}

TORCH_LIBRARY_IMPL(mnv4_cpu, CPU, m) { m.impl("conv", &conv_cpu); }

}  // namespace mnv4
