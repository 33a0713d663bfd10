// AVX2+FMA microkernels: f32_gemm_6x16__avx2_fma and f32_conv_nhwc_6x16__avx2_fma (6 rows x 2 ymm = 12
// accumulators: ukernels.h's kGemmAvx2Tile, kConvNhwcAvx2Tile), f32_dwconv__avx2_fma (8 output columns per
// ymm), f32_dwconv_nhwc__avx2_fma, x32_transpose__avx2 (8x8 register transposes). The code is the shared
// template in ../common/simd_impl.h with V = Avx2. Only this file is compiled for avx2+fma (the pragma below
// = __attribute__((target("avx2,fma"))) on every function after it); the rest of the build stays generic
// x86-64 and interface/dispatch.cpp calls in here only when __builtin_cpu_supports says the CPU has both.
#if defined(__x86_64__) || defined(_M_X64)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "../interface/ukernels.h"

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

#include "vec_avx2.h"

namespace mnv4 {
namespace cpu {
namespace avx2 {

using V = Avx2Vec;

#include "../common/simd_impl.h"

constexpr Tile kGemm = kGemmAvx2Tile, kConv = kConvNhwcAvx2Tile;
static_assert(kGemm.nr % V::W == 0 && kConv.nr % V::W == 0, "a tile's columns are whole ymm vectors");

}  // namespace avx2

void f32_conv_nhwc_6x16__avx2_fma(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* A,
    int64_t lda, const float* B, int64_t ldb, int64_t bss, float* C, int64_t ldc, const float* bias, Act act,
    const float* R, int64_t ldr) {
  avx2::pw_dispatch<avx2::kConv.mr, avx2::kConv.nr / avx2::V::W>(M, N, K, T, off, A, lda, B, ldb, bss, C, ldc, bias,
                                                                  act, R, ldr);
}

void f32_dwconv_nhwc__avx2_fma(int64_t channels, int k, int s, const float* in, int64_t in_ps, int64_t in_rs,
                               int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw,
                               const float* bias, Act act, float* out, int64_t out_ps, int64_t out_rs, int64_t oy0,
                               int64_t oy1) {
  avx2::dwn_dispatch(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, act, out, out_ps, out_rs, oy0,
                       oy1);
}

void f32_gemm_6x16__avx2_fma(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                             int64_t ldb, float* C, int64_t ldc, const float* bias, Act act, const float* R,
                             int64_t ldr) {
  avx2::gemm_dispatch<avx2::kGemm.mr, avx2::kGemm.nr / avx2::V::W>(M, N, K, A, lda, B, ldb, C, ldc, bias, act, R,
                                                                    ldr);
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
