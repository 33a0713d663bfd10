// AVX2+FMA microkernels: f32_gemm_6x16__avx2_fma (6 rows x 2 ymm = 12 accumulators), f32_dwconv__avx2_fma
// (8 output columns per ymm), x32_transpose__avx2 (8x8 register transposes). The code is the shared
// template in ../common/simd_impl.h with V = Avx2. Only this file is compiled for avx2+fma (the pragma below
// = __attribute__((target("avx2,fma"))) on every function after it); the rest of the build stays generic
// x86-64 and interface/dispatch.cpp calls in here only when __builtin_cpu_supports says the CPU has both.
#if defined(__x86_64__) || defined(_M_X64)

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../interface/ukernels.h"

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace mnv4 {
namespace cpu {
namespace avx2 {

struct V {
  using T = __m256;
  static constexpr int W = 8;
  static inline __m256i mask(int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
  }
  static inline T zero() { return _mm256_setzero_ps(); }
  static inline T set1(float f) { return _mm256_set1_ps(f); }
  static inline T loadu(const float* p) { return _mm256_loadu_ps(p); }
  static inline void storeu(float* p, T v) { _mm256_storeu_ps(p, v); }
  static inline T loadn(const float* p, int n) {
    if (n >= W) return _mm256_loadu_ps(p);
    return _mm256_maskload_ps(p, mask(n));
  }
  static inline void storen(float* p, T v, int n) {
    if (n >= W) return _mm256_storeu_ps(p, v);
    // through the stack: vmaskmovps stores are microcoded and slow on AMD cores
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    for (int i = 0; i < n; ++i) p[i] = t[i];
  }
  static inline T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static inline T add(T a, T b) { return _mm256_add_ps(a, b); }
  static inline T max(T a, T b) { return _mm256_max_ps(a, b); }
  static inline void deinterleave2(const float* p, T& even, T& odd) {
    const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    // within 128-bit lanes: [a0 a2 b0 b2 | a4 a6 b4 b6]; then order the 64-bit pairs a.. a.. b.. b..
    even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
    odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
  }
};

#include "../common/simd_impl.h"

}  // namespace avx2

void f32_gemm_6x16__avx2_fma(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                             int64_t ldb, float* C, int64_t ldc, const float* bias, Act act, const float* R,
                             int64_t ldr) {
  avx2::gemm_dispatch<6, 2>(M, N, K, A, lda, B, ldb, C, ldc, bias, act, R, ldr);
}

void f32_dwconv__avx2_fma(int64_t channels, int k, int s, const float* in, int64_t in_cs, int64_t in_rs,
                          int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, const float* bias, Act act,
                          float* out, int64_t out_cs, int64_t out_rs, int64_t oy0, int64_t oy1, float* scratch) {
  avx2::dwconv_dispatch(channels, k, s, in, in_cs, in_rs, in_r0, in_h, in_w, w, bias, act, out, out_cs, out_rs, oy0,
                        oy1, scratch);
}

// 8x8 blocks through registers (unpack/shuffle/permute), scalar edges.
void x32_transpose__avx2(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd) {
  int64_t r0 = 0;
  for (; r0 + 8 <= rows; r0 += 8) {
    int64_t c0 = 0;
    for (; c0 + 8 <= cols; c0 += 8) {
      const float* s = src + r0 * lds + c0;
      __m256 r[8], t[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * lds);
      t[0] = _mm256_unpacklo_ps(r[0], r[1]);
      t[1] = _mm256_unpackhi_ps(r[0], r[1]);
      t[2] = _mm256_unpacklo_ps(r[2], r[3]);
      t[3] = _mm256_unpackhi_ps(r[2], r[3]);
      t[4] = _mm256_unpacklo_ps(r[4], r[5]);
      t[5] = _mm256_unpackhi_ps(r[4], r[5]);
      t[6] = _mm256_unpacklo_ps(r[6], r[7]);
      t[7] = _mm256_unpackhi_ps(r[6], r[7]);
      r[0] = _mm256_shuffle_ps(t[0], t[2], 0x44);
      r[1] = _mm256_shuffle_ps(t[0], t[2], 0xEE);
      r[2] = _mm256_shuffle_ps(t[1], t[3], 0x44);
      r[3] = _mm256_shuffle_ps(t[1], t[3], 0xEE);
      r[4] = _mm256_shuffle_ps(t[4], t[6], 0x44);
      r[5] = _mm256_shuffle_ps(t[4], t[6], 0xEE);
      r[6] = _mm256_shuffle_ps(t[5], t[7], 0x44);
      r[7] = _mm256_shuffle_ps(t[5], t[7], 0xEE);
      float* d = dst + c0 * ldd + r0;
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(d + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(d + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
      }
    }
    for (; c0 < cols; ++c0)
      for (int64_t r = r0; r < r0 + 8; ++r) dst[c0 * ldd + r] = src[r * lds + c0];
  }
  for (; r0 < rows; ++r0)
    for (int64_t c = 0; c < cols; ++c) dst[c * ldd + r0] = src[r0 * lds + c];
}

}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
