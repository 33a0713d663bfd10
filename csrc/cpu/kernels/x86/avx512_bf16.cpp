// bf16 tables on AVX-512 CPUs with AVX512-BF16 (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 / 5):
//   bf16_conv_nhwc_7x32__avx512bf16: 7 pixels x 32 channels (14 zmm accumulators, as the fp32
//     f32_conv_nhwc_7x32__avx512), one vdpbf16ps per accumulator and k pair: twice the fp32 kernel's
//     multiply-adds per instruction, half its bytes. B layout bf16_kpair32. The stems' conv (3 channels, 3x3,
//     stride 2) runs 14 pixels x 32 channels with its shape compiled in (bf16_impl.h's LpStemShape).
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

#define MNV4_LP_NS avx512bf16
#define MNV4_LP_TRAITS "../x86/lp_avx512.h"
#define MNV4_LP_AVX512_DP 1
#include "../common/lp_table.inc"

namespace mnv4 {
namespace cpu {
MNV4_LP_TABLE(bf16_t, avx512bf16, Bf16Avx512Dp, PairTile, 7, 2, bf16_conv_nhwc_7x32__avx512bf16,
              bf16_dwconv_nhwc__avx512bf16)
}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
