// The microkernels a CPU op's schedule runs, per element type E of the activations it keeps in memory:
// float (ukernels.h: fp32 tables) or cpu::bf16_t (ukernels_bf16.h: bf16 activations, fp32 weights for the
// depthwise convs and fp32 biases, fp32 accumulation, one rounding per output). The schedules (uib.cpp,
// conv.cpp, pointwise.cpp) are templates on E that call only these members, so fp32 and bf16 share one code
// path. Each table is read once per op call (the env overrides are read once per process).
//   operand(weight, T, K, N, make_kn): the weight's packed GEMM operand B, T taps of K rows, N columns (cached
//     per weight tensor, weight_cache.h); make_kn() gives it as a [T*K][N] row-major matrix.
//   gemm / conv: the NHWC GEMM / k-tap conv over columns [n0, n0 + N) of B (n0 a multiple of nr()).
//   dw: the NHWC depthwise conv (fp32 weights [k*k][C] and bias).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

#include "kernels/interface/ukernels.h"
#include "kernels/interface/ukernels_bf16.h"
#include "weight_cache.h"

namespace mnv4 {

template <class E>
struct KernelSet;

template <>
struct KernelSet<float> {
  using Elem = float;
  using Operand = WeightOperand;
  using B = BMat;
  const cpu::UKernels& uk = cpu::ukernels();
  int mr() const { return uk.conv_nhwc_tile.mr; }
  int64_t nr() const { return std::max(1, uk.conv_nhwc_tile.nr); }
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
  static float to_f(float v) { return v; }
  static float from_f(float v) { return v; }
  static float* data(const at::Tensor& t) { return t.data_ptr<float>(); }
  static constexpr at::ScalarType dtype = at::kFloat;
};

template <>
struct KernelSet<cpu::bf16_t> {
  using Elem = cpu::bf16_t;
  using Operand = LpWeightOperand;
  using B = LpBMat;
  const cpu::LpUKernels<cpu::bf16_t>& lk = cpu::lp_ukernels<cpu::bf16_t>();
  int mr() const { return lk.gemm_mr; }
  int64_t nr() const { return lk.pack.nr; }
  Operand operand(const at::Tensor& w, int T, int64_t K, int64_t N, const std::function<at::Tensor()>& make_kn) const {
    return lp_weight_operand(w, lk.pack, T, K, N, make_kn);
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
  static float to_f(Elem v) { return cpu::bf16_to_f32(v); }
  static Elem from_f(float v) { return cpu::f32_to_bf16(v); }
  static Elem* data(const at::Tensor& t) { return reinterpret_cast<Elem*>(t.data_ptr<at::BFloat16>()); }
  static constexpr at::ScalarType dtype = at::kBFloat16;
};

}  // namespace mnv4
