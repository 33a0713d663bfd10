// 16-lane fp32 vector traits over AVX-512F zmm registers: the `V` of ../common/simd_impl.h for the NHWC
// kernels of x86/avx512.cpp. Include it only inside a `#pragma GCC target("avx512f,...")` region. Only
// AVX-512F instructions; partial vectors use mask registers (masked loads and stores are cheap here, unlike
// AVX2's vmaskmovps stores on AMD cores).
#pragma once

#include <immintrin.h>

namespace mnv4 {
namespace cpu {

struct Avx512Vec {
  using T = __m512;
  static constexpr int W = 16;
  static constexpr int kRegs = 32;  // vector registers (register-blocking budgets)
  static inline __mmask16 mask(int n) {
    return n <= 0 ? __mmask16(0) : n >= W ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
  }
  static inline T zero() { return _mm512_setzero_ps(); }
  static inline T set1(float f) { return _mm512_set1_ps(f); }
  static inline T loadu(const float* p) { return _mm512_loadu_ps(p); }
  static inline void storeu(float* p, T v) { _mm512_storeu_ps(p, v); }
  static inline T loadn(const float* p, int n) { return n >= W ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask(n), p); }
  using Mask = __mmask16;  // tail_mask(n) once, loadm(p, m) in a loop: see loadm in ../common/simd_impl.h
  static inline Mask tail_mask(int n) { return mask(n); }
  static inline T loadm(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static inline void storen(float* p, T v, int n) {
    if (n >= W) return _mm512_storeu_ps(p, v);
    _mm512_mask_storeu_ps(p, mask(n), v);
  }
  static inline T add(T a, T b) { return _mm512_add_ps(a, b); }
  static inline T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static inline T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static inline T div(T a, T b) { return _mm512_div_ps(a, b); }
  static inline T abs(T a) { return _mm512_abs_ps(a); }
  static inline T select_neg(T x, T a, T b) {  // a where x's sign bit is set
    const __mmask16 neg = _mm512_cmplt_epi32_mask(_mm512_castps_si512(x), _mm512_setzero_si512());
    return _mm512_mask_blend_ps(neg, b, a);
  }
  static inline T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static inline T max(T a, T b) { return _mm512_max_ps(a, b); }  // b when either is NaN (as maxps)
  static inline T min(T a, T b) { return _mm512_min_ps(a, b); }
  static inline T round(T a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline T ldexp(T p, T i) {  // p * 2^i for integral i (added to the exponent field)
    const __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(i), 23);
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), e));
  }
  static inline T zero_below(T r, T x, float t) {  // r where x >= t, else 0 (ordered compare: false for NaN)
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(t), _CMP_GE_OQ), r);
  }
  static inline void deinterleave2(const float* p, T& even, T& odd) {  // 32 floats -> even / odd lanes
    const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    even = _mm512_permutex2var_ps(a, ie, b);
    odd = _mm512_permutex2var_ps(a, io, b);
  }
};

}  // namespace cpu
}  // namespace mnv4
