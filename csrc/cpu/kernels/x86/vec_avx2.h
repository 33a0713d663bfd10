// 8-lane fp32 vector traits over AVX2+FMA ymm registers: the `V` every template in ../common/ is written
// against (simd_impl.h: GEMM, dwconv; softmax_impl.h: exp2, column softmax). Include it only inside a
// `#pragma GCC target("avx2,fma")` region (x86/avx2_fma.cpp, x86/softmax_avx2.cpp): the intrinsics need it.
#pragma once

#include <immintrin.h>

namespace mnv4 {
namespace cpu {

struct Avx2Vec {
  using T = __m256;
  static constexpr int W = 8;
  static constexpr int kRegs = 16;  // vector registers (register-blocking budgets)
  static inline __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline T zero() { return _mm256_setzero_ps(); }
  static inline T set1(float f) { return _mm256_set1_ps(f); }
  static inline T loadu(const float* p) { return _mm256_loadu_ps(p); }
  static inline void storeu(float* p, T v) { _mm256_storeu_ps(p, v); }
  static inline T loadn(const float* p, int n) { return n >= W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(n)); }
  using Mask = __m256i;  // tail_mask(n) once, loadm(p, m) in a loop: see loadm in ../common/simd_impl.h
  static inline Mask tail_mask(int n) { return mask(n); }
  static inline T loadm(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static inline void storen(float* p, T v, int n) {
    if (n >= W) return _mm256_storeu_ps(p, v);
    // through the stack: vmaskmovps stores are microcoded and slow on AMD cores
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    for (int i = 0; i < n; ++i) p[i] = t[i];
  }
  static inline T add(T a, T b) { return _mm256_add_ps(a, b); }
  static inline T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static inline T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static inline T div(T a, T b) { return _mm256_div_ps(a, b); }
  static inline T abs(T a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }
  static inline T select_neg(T x, T a, T b) { return _mm256_blendv_ps(b, a, x); }  // a where x's sign bit is set
  static inline T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static inline T max(T a, T b) { return _mm256_max_ps(a, b); }  // b when either is NaN
  static inline T min(T a, T b) { return _mm256_min_ps(a, b); }
  static inline T round(T a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline T ldexp(T p, T i) {  // p * 2^i for integral i (added to the exponent field)
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(i), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
  }
  static inline T zero_below(T r, T x, float t) {  // r where x >= t, else 0 (ordered compare: false for NaN)
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(t), _CMP_LT_OQ), r);
  }
  static inline void deinterleave2(const float* p, T& even, T& odd) {  // 16 floats -> even / odd lanes
    const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    // within 128-bit lanes: [a0 a2 b0 b2 | a4 a6 b4 b6]; then order the 64-bit pairs a.. a.. b.. b..
    even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
    odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
  }
};

}  // namespace cpu
}  // namespace mnv4
