// bf16 tables on AVX-512 CPUs with AVX512-BF16 (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 / 5):
//   bf16_conv_nhwc_7x32__avx512bf16: 7 pixels x 32 channels (14 zmm accumulators, as the fp32
//     f32_conv_nhwc_7x32__avx512), one vdpbf16ps per accumulator and k pair: twice the fp32 kernel's
//     multiply-adds per instruction, half its bytes. B layout bf16_kpair32.
//   bf16_dwconv_nhwc__avx512bf16: bf16 in / out, fp32 taps and sums, vcvtneps2bf16 rounding.
// The code is common/bf16_impl.h with L = Bf16Avx512Dp (x86/lp_avx512.h). interface/dispatch_bf16.cpp calls
// in only when __builtin_cpu_supports reports avx512bf16 (and avx512f, bw, vl).
#if defined(__x86_64__) || defined(_M_X64)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../interface/ukernels_bf16.h"

#include <immintrin.h>

// Avx512Vec under avx512.cpp's exact target: see x86/lp_avx512.h
#pragma GCC push_options
#pragma GCC target("avx512f,fma,prfchw")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "vec_avx512.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,fma,prfchw")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace mnv4 {
namespace cpu {
namespace avx512bf16 {

#define MNV4_LP_AVX512_DP 1
#include "lp_avx512.h"
#include "../common/vec_math.h"
#include "../common/bf16_impl.h"

}  // namespace avx512bf16

void bf16_conv_nhwc_7x32__avx512bf16(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const bf16_t* A,
                                     int64_t lda, const bf16_t* B, int64_t bss, bf16_t* C, int64_t ldc,
                                     const float* bias, Act act, const bf16_t* R, int64_t ldr) {
  using L = avx512bf16::Bf16Avx512Dp;
  avx512bf16::lp_conv_dispatch<L, avx512bf16::PairTile<L>, 7, 2>(M, N, K, T, off, A, lda, B, bss, C, ldc, bias, act,
                                                                 R, ldr);
}

void bf16_dwconv_nhwc__avx512bf16(int64_t channels, int k, int s, const bf16_t* in, int64_t in_ps, int64_t in_rs,
                                  int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw,
                                  const float* bias, Act act, bf16_t* out, int64_t out_ps, int64_t out_rs,
                                  int64_t oy0, int64_t oy1) {
  avx512bf16::lp_dw_dispatch<avx512bf16::Bf16Avx512Dp>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw,
                                                       bias, act, out, out_ps, out_rs, oy0, oy1);
}

}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
