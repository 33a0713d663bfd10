// The microkernels a CPU op's schedule runs, per element type E of the activations it keeps in memory:
// float (ukernels.h: fp32 tables) or cpu::bf16_t / cpu::f16_t (ukernels_bf16.h: bf16 / fp16 activations, fp32
// weights for the depthwise convs and fp32 biases, fp32 accumulation (fp16 tables may sum short chunks of
// products in fp16 first: LpUKernels::f16_acc_chunk), one rounding per output). The schedules (uib.cpp,
// conv.cpp, pointwise.cpp, mqa.cpp's NHWC plan) are templates on E that call only these members, so fp32,
// bf16 and fp16 share one code path. Each table is read once per op call (the env overrides are read once per
// process). with_kernel_set (at the end) picks the set for an op's input dtype.
//   operand(weight, T, K, N, make_kn): the weight's packed GEMM operand B, T taps of K rows, N columns (cached
//     per weight tensor, weight_cache.h); make_kn() gives it as a [T*K][N] row-major matrix.
//   gemm / conv: the NHWC GEMM / k-tap conv over columns [n0, n0 + N) of B (n0 a multiple of nr()).
//   dw: the NHWC depthwise conv (fp32 weights [k*k][C] and bias).
//   k_block(): 0, or the k of one tile product (the AMX tables: 32), where a short tap costs a whole block.
// Elem is the type of the op's input and output, Tile that of the intermediates it keeps in scratch (the
// same but for WideningKernelSet: a bf16 op on a convert-on-load table, bf16 in and out, fp32 inside).
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <functional>

#include "kernels/interface/ukernels.h"
#include "kernels/interface/ukernels_bf16.h"
#include "weight_cache.h"

namespace mnv4 {

// bf16 / fp16 (E = cpu::bf16_t / cpu::f16_t): the reduced-precision table of E for this CPU.
template <class E>
struct KernelSet {
  using Elem = E;
  using Tile = E;
  using Operand = LpWeightOperand<E>;
  using B = LpBMat<E>;
  const cpu::LpUKernels<E>& lk = cpu::lp_ukernels<E>();
  int mr() const { return lk.gemm_mr; }
  int64_t nr() const { return lk.pack.nr; }
  int k_block() const { return lk.k_block; }
  Operand operand(const at::Tensor& w, int T, int64_t K, int64_t N, const std::function<at::Tensor()>& make_kn) const {
    return lp_weight_operand<E>(w, lk.pack, T, K, N, make_kn);
  }
  static float at(const B& b, int64_t row, int64_t n) { return b.at(row, n); }
  void gemm(int64_t M, int64_t N, int64_t K, const Elem* A, int64_t lda, const B& b, int64_t n0, Elem* C, int64_t ldc,
            const float* bias, cpu::Act act, const Elem* R, int64_t ldr) const {
    static constexpr int64_t off0 = 0;
    lk.conv_nhwc(M, N, K, 1, &off0, A, lda, b.ptr(n0), b.bss, C, ldc, bias, act, R, ldr);
  }
  void conv(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const Elem* A, int64_t lda, const B& b,
            int64_t n0, Elem* C, int64_t ldc, const float* bias, cpu::Act act, const Elem* R, int64_t ldr) const {
    lk.conv_nhwc(M, N, K, T, off, A, lda, b.ptr(n0), b.bss, C, ldc, bias, act, R, ldr);
  }
  void dw(int64_t channels, int k, int s, const Elem* in, int64_t in_ps, int64_t in_rs, int64_t in_r0, int64_t in_h,
          int64_t in_w, const float* w, int64_t ldw, const float* bias, cpu::Act act, Elem* out, int64_t out_ps,
          int64_t out_rs, int64_t oy0, int64_t oy1) const {
    lk.dwconv_nhwc(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, act, out, out_ps, out_rs, oy0,
                   oy1);
  }
  static Elem* data(const at::Tensor& t) {
    return reinterpret_cast<Elem*>(t.data_ptr<typename LpStorage<E>::C10>());
  }
  static constexpr at::ScalarType dtype = LpStorage<E>::dtype;
};

template <>
struct KernelSet<float> {
  using Elem = float;
  using Tile = float;
  using Operand = WeightOperand;
  using B = BMat;
  const cpu::UKernels& uk = cpu::ukernels();
  int mr() const { return uk.conv_nhwc_tile.mr; }
  int64_t nr() const { return std::max(1, uk.conv_nhwc_tile.nr); }
  int k_block() const { return 0; }
  Operand operand(const at::Tensor& w, int T, int64_t K, int64_t N, const std::function<at::Tensor()>& make_kn) const {
    return weight_operand(w, T * K, N, uk, make_kn);  // fp32 slabs: the T taps' rows in sequence
  }
  static float at(const B& b, int64_t row, int64_t n) { return b.ptr(row, n / b.slab * b.slab)[n % b.slab]; }
  void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const B& b, int64_t n0, float* C,
            int64_t ldc, const float* bias, cpu::Act act, const float* R, int64_t ldr) const {
    gemm_b(uk, M, N, K, A, lda, b, 0, n0, C, ldc, bias, act, R, ldr);
  }
  void conv(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* A, int64_t lda, const B& b,
            int64_t n0, float* C, int64_t ldc, const float* bias, cpu::Act act, const float* R, int64_t ldr) const {
    uk.conv_nhwc(M, N, K, T, off, A, lda, b.ptr(0, n0), b.row_stride(), b.slab_stride(), C, ldc, bias, act, R, ldr);
  }
  void dw(int64_t channels, int k, int s, const float* in, int64_t in_ps, int64_t in_rs, int64_t in_r0, int64_t in_h,
          int64_t in_w, const float* w, int64_t ldw, const float* bias, cpu::Act act, float* out, int64_t out_ps,
          int64_t out_rs, int64_t oy0, int64_t oy1) const {
    uk.dwconv_nhwc(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, act, out, out_ps, out_rs, oy0,
                   oy1);
  }
  static float* data(const at::Tensor& t) { return t.data_ptr<float>(); }
  static constexpr at::ScalarType dtype = at::kFloat;
};

// Row conversions of bf16_rows.cpp, at the vector width of a bf16 table's ISA:
//   widen: dst[r*ldd + c] = src[r*lds + c] as fp32 (exact)
//   round: dst[r*ldd + c] = rnd(src[r*lds + c] + R[r*ldr + c]) (R nullptr: + 0), R widened, the sum in fp32,
//          rnd = cpu::f32_to_bf16 (nearest even, NaN kept)
// for r < rows, c < cols.
struct Bf16Rows {
  void (*widen)(int64_t rows, int64_t cols, const cpu::bf16_t* src, int64_t lds, float* dst, int64_t ldd);
  void (*round)(int64_t rows, int64_t cols, const float* src, int64_t lds, const cpu::bf16_t* R, int64_t ldr,
                cpu::bf16_t* dst, int64_t ldd);
};
const Bf16Rows& bf16_rows(cpu::LpIsa isa);
// A per-thread arena for WideningKernelSet's widened operands and unrounded outputs (64-byte aligned; valid
// until the next call on this thread: each use ends within one kernel-set call).
float* widen_scratch(int64_t floats);

// A bf16 op on a convert-on-load table (cpu::lp_convert_on_load: no bf16 dot product): the fp32 kernels
// (cpu::ukernels(), MNV4_CPU_ISA) on fp32 intermediates (Tile) and fp32 1x1 weights (from the bf16 weight
// tensors: exact), bf16 (Elem) only at the op's input and output. An operand read from the bf16 input is
// widened once per call; an output in bf16 is computed in fp32 and rounded once, the residual added in fp32
// before that rounding (as the bf16 kernels do). The schedule runs the same steps as on the other sets; only
// the rounding points differ (fewer: the intermediates are not rounded).
struct WideningKernelSet : KernelSet<float> {
  using Elem = cpu::bf16_t;
  using Tile = float;
  const Bf16Rows& cv = bf16_rows(cpu::lp_ukernels<cpu::bf16_t>().isa);
  using KernelSet<float>::gemm;
  using KernelSet<float>::dw;
  // bf16 A (the op's input) -> fp32 C
  void gemm(int64_t M, int64_t N, int64_t K, const Elem* A, int64_t lda, const B& b, int64_t n0, float* C,
            int64_t ldc, const float* bias, cpu::Act act, const float* R, int64_t ldr) const {
    float* a = widen_scratch(M * K);
    cv.widen(M, K, A, lda, a, K);
    KernelSet<float>::gemm(M, N, K, a, K, b, n0, C, ldc, bias, act, R, ldr);
  }
  // fp32 A -> bf16 C (the op's output), residual R in bf16
  void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const B& b, int64_t n0, Elem* C,
            int64_t ldc, const float* bias, cpu::Act act, const Elem* R, int64_t ldr) const {
    float* c = widen_scratch(M * N);
    KernelSet<float>::gemm(M, N, K, A, lda, b, n0, c, N, bias, act, nullptr, 0);
    cv.round(M, N, c, N, R, ldr, C, ldc);
  }
  // fp32 A -> bf16 C (the op's output), residual R in fp32 (an input widened once): added before the rounding
  void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const B& b, int64_t n0, Elem* C,
            int64_t ldc, const float* bias, cpu::Act act, const float* R, int64_t ldr) const {
    float* c = widen_scratch(M * N);
    KernelSet<float>::gemm(M, N, K, A, lda, b, n0, c, N, bias, act, R, ldr);
    cv.round(M, N, c, N, nullptr, 0, C, ldc);
  }
  // k-tap conv, fp32 A -> bf16 C (the op's output), residual R in fp32: as the gemm above
  using KernelSet<float>::conv;
  void conv(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* A, int64_t lda, const B& b,
            int64_t n0, Elem* C, int64_t ldc, const float* bias, cpu::Act act, const float* R, int64_t ldr) const {
    float* c = widen_scratch(M * N);
    KernelSet<float>::conv(M, N, K, T, off, A, lda, b, n0, c, N, bias, act, R, ldr);
    cv.round(M, N, c, N, nullptr, 0, C, ldc);
  }
  // bf16 in (the op's input) -> fp32 out: the input rows the output rows [oy0, oy1) read, widened
  void dw(int64_t channels, int k, int s, const Elem* in, int64_t in_ps, int64_t in_rs, int64_t in_r0, int64_t in_h,
          int64_t in_w, const float* w, int64_t ldw, const float* bias, cpu::Act act, float* out, int64_t out_ps,
          int64_t out_rs, int64_t oy0, int64_t oy1) const {
    const int64_t lo = std::max<int64_t>(0, oy0 * s - k / 2), hi = std::min<int64_t>(in_h, (oy1 - 1) * s + k / 2 + 1);
    float* t = widen_scratch(std::max<int64_t>(0, hi - lo) * in_w * channels);
    for (int64_t r = lo; r < hi; ++r)
      cv.widen(in_w, channels, in + (r - in_r0) * in_rs, in_ps, t + (r - lo) * in_w * channels, channels);
    KernelSet<float>::dw(channels, k, s, t, channels, in_w * channels, lo, in_h, in_w, w, ldw, bias, act, out, out_ps,
                         out_rs, oy0, oy1);
  }
  static Elem* data(const at::Tensor& t) { return reinterpret_cast<Elem*>(t.data_ptr<at::BFloat16>()); }
  static constexpr at::ScalarType dtype = at::kBFloat16;
};

// Whether an op on fp16 input runs KernelSet<cpu::f16_t>: where the f16 table has fp16 arithmetic (neon_fp16,
// avx512fp16; neon_fp16_emu or avx512fp16_emu when MNV4_CPU_LP_ISA forces it, in tests). Elsewhere no table
// computes fp16 faster than the fp32 kernels (the scalar one converts on load), so fp16 is computed in fp32:
// converted at the op's entry and its result converted back, the weights converted once per tensor
// (fp32_constant).
inline bool f16_kernels() {
  static const bool yes = !cpu::lp_convert_on_load(cpu::lp_ukernels<cpu::f16_t>().isa);
  return yes;
}

// What an op's schedules take (with_kernel_set's Flags): WideningKernelSet on a convert-on-load bf16 table
// (uib, conv); KernelSet<f16_t> where f16_kernels() (uib, conv, mqa; not pointwise: the models' heads, long
// memory-bound matrix-vector products where fp16 arithmetic gains nothing and its chunked sums cost the most
// accuracy, so fp16 is computed in fp32 there).
enum KernelSetFlags : unsigned { kTakesWidening = 1u, kTakesF16 = 2u };

// Calls f(KS{}) with the kernel set an op runs for input dtype dt and returns its result:
//   bf16: KernelSet<bf16_t>; WideningKernelSet instead on a convert-on-load bf16 table, if Flags has
//         kTakesWidening;
//   fp16: KernelSet<f16_t> where f16_kernels() and Flags has kTakesF16, else KernelSet<float> (f converts x to
//         fp32);
//   any other dtype: KernelSet<float>.
template <unsigned Flags, class F>
at::Tensor with_kernel_set(at::ScalarType dt, F&& f) {
  if (dt == at::kBFloat16) {
    if constexpr ((Flags & kTakesWidening) != 0)
      if (cpu::lp_convert_on_load(cpu::lp_ukernels<cpu::bf16_t>().isa)) return f(WideningKernelSet{});
    return f(KernelSet<cpu::bf16_t>{});
  }
  if constexpr ((Flags & kTakesF16) != 0)
    if (dt == at::kHalf && f16_kernels()) return f(KernelSet<cpu::f16_t>{});
  return f(KernelSet<float>{});
}

}  // namespace mnv4
