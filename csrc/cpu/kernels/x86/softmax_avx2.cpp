// AVX2+FMA exp2 and column softmax (interface/softmax.h): the template common/softmax_impl.h with 8-lane
// ymm traits. Only this file's functions are compiled for avx2+fma (pragma target, as x86/avx2_fma.cpp);
// interface/softmax_dispatch.cpp calls them only when the CPU has both.
#if defined(__x86_64__) || defined(_M_X64)

#include <cstdint>

#include "../interface/softmax.h"

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace mnv4 {
namespace cpu {
namespace softmax_avx2 {

struct VX {
  using T = __m256;
  static constexpr int W = 8;
  static inline __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline T zero() { return _mm256_setzero_ps(); }
  static inline T set1(float f) { return _mm256_set1_ps(f); }
  static inline T loadu(const float* p) { return _mm256_loadu_ps(p); }
  static inline void storeu(float* p, T v) { _mm256_storeu_ps(p, v); }
  static inline T loadn(const float* p, int n) { return n >= W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(n)); }
  static inline void storen(float* p, T v, int n) {
    if (n >= W) return _mm256_storeu_ps(p, v);
    _mm256_maskstore_ps(p, mask(n), v);
  }
  static inline T add(T a, T b) { return _mm256_add_ps(a, b); }
  static inline T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static inline T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static inline T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static inline T max(T a, T b) { return _mm256_max_ps(a, b); }  // b when either is NaN
  static inline T min(T a, T b) { return _mm256_min_ps(a, b); }
  static inline T round(T a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline T ldexp(T p, T i) {
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(i), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
  }
  static inline T zero_below(T r, T x, float t) {  // ordered compare: false for NaN
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(t), _CMP_LT_OQ), r);
  }
};

#include "../common/softmax_impl.h"

}  // namespace softmax_avx2

void f32_exp2__avx2_fma(int64_t n, const float* x, float* y) { softmax_avx2::exp2_impl(n, x, y); }

void f32_softmax_cols__avx2_fma(int64_t M, int64_t N, float* S, int64_t lds, float* sum) {
  softmax_avx2::softmax_cols_impl(M, N, S, lds, sum);
}

}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
