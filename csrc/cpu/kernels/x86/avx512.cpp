// AVX-512F microkernels: f32_conv_nhwc_7x32__avx512 (the NHWC GEMM; a pointwise conv is one tap; 7 pixels
// x 2 zmm = 14 accumulators; 7 rows because every plane of the 224-pixel models, 7x7 to 112x112, has a
// multiple of 7 pixels, so no row tile is short; an 8-row tile for the 256-pixel models' 64-pixel planes
// was no faster, so there is one tile; the stems' conv, 3 channels 3x3 stride 2, runs a 14-pixel tile with its
// shape compiled in: simd_impl.h's StemShape), f32_dwconv_nhwc__avx512 (16 channels per zmm) and the channel-major
// f32_gemm_8x32__avx512 (the mqa op's products). The tiles are ukernels.h's kConvNhwcAvx512Tile and
// kGemmAvx512Tile. The code is the shared template in ../common/simd_impl.h with V = Avx512Vec. Only this
// file is compiled for AVX-512 (the pragma below); interface/dispatch.cpp calls in here only when
// __builtin_cpu_supports says the CPU has avx512f. The avx512 table's channel-major depthwise conv and
// transpose are the AVX2 ones (see dispatch.cpp).
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
#pragma GCC target("avx512f,fma,prfchw")
// GCC 12's avx512fintrin.h builds _mm512_max_ps etc. on an intentionally undefined vector, which
// -W(maybe-)uninitialized report at every inlined use; nothing of ours is uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "vec_avx512.h"

namespace mnv4 {
namespace cpu {
namespace avx512 {

using V = Avx512Vec;

#include "../common/simd_impl.h"

constexpr Tile kGemm = kGemmAvx512Tile, kConv = kConvNhwcAvx512Tile;
static_assert(kGemm.nr % V::W == 0 && kConv.nr % V::W == 0, "a tile's columns are whole zmm vectors");

}  // namespace avx512

void f32_gemm_8x32__avx512(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                           float* C, int64_t ldc, const float* bias, Act act, const float* R, int64_t ldr) {
  // The last 1..8 columns through the AVX2 kernel's 8-wide tile: a zmm tile would compute 16 columns for
  // them, and Zen 4 issues two ymm FMAs per cycle but one zmm (e.g. the mqa op's 72-column query tiles).
  constexpr int MR = avx512::kGemm.mr, NV = avx512::kGemm.nr / avx512::V::W;
  const int64_t tail = N % avx512::kGemm.nr;
  if (N > avx512::kGemm.nr && tail > 0 && tail <= 8) {
    avx512::gemm_dispatch<MR, NV>(M, N - tail, K, A, lda, B, ldb, C, ldc, bias, act, R, ldr);
    const int64_t j = N - tail;
    f32_gemm_6x16__avx2_fma(M, tail, K, A, lda, B + j, ldb, C + j, ldc, bias, act, R ? R + j : nullptr, ldr);
    return;
  }
  avx512::gemm_dispatch<MR, NV>(M, N, K, A, lda, B, ldb, C, ldc, bias, act, R, ldr);
}

void f32_conv_nhwc_7x32__avx512(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* A,
    int64_t lda, const float* B, int64_t ldb, int64_t bss, float* C, int64_t ldc, const float* bias, Act act,
    const float* R, int64_t ldr) {
  avx512::pw_dispatch<avx512::kConv.mr, avx512::kConv.nr / avx512::V::W>(M, N, K, T, off, A, lda, B, ldb, bss, C,
                                                                          ldc, bias, act, R, ldr);
}

void f32_dwconv_nhwc__avx512(int64_t channels, int k, int s, const float* in, int64_t in_ps, int64_t in_rs,
                             int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw,
                             const float* bias, Act act, float* out, int64_t out_ps, int64_t out_rs, int64_t oy0,
                             int64_t oy1) {
  avx512::dwn_dispatch(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, act, out, out_ps, out_rs,
                       oy0, oy1);
}

}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
