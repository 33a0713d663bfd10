// bf16 tables for x86 CPUs with AVX2+FMA but not AVX-512 (Haswell to Alder Lake client cores, Zen 1-3):
// convert-on-load, so a bf16 model there runs on fp32 FMAs instead of the scalar table.
//   bf16_conv_nhwc_6x16__avx2_fma: the 6 x 16 tile of f32_conv_nhwc_6x16__avx2_fma (12 ymm accumulators) on
//     operands widened to fp32 once per row block (A) and per row block and slab (B's kpair16 rows, by the slab's
//     first row tile): F32Tile, common/bf16_impl.h. The weights cross memory in bf16.
//   bf16_dwconv_nhwc__avx2_fma: bf16 in / out, fp32 taps and sums, rounding in integer lanes.
// The code is common/bf16_impl.h with L = Bf16Avx2Cvt (x86/lp_avx2.h). interface/dispatch_bf16.cpp calls in
// only when __builtin_cpu_supports reports avx2 and fma.
#if defined(__x86_64__) || defined(_M_X64)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../interface/ukernels_bf16.h"

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "vec_avx2.h"

#define MNV4_LP_NS avx2cvt
#define MNV4_LP_TRAITS "../x86/lp_avx2.h"
#include "../common/lp_table.inc"

namespace mnv4 {
namespace cpu {
MNV4_LP_TABLE(bf16_t, avx2cvt, Bf16Avx2Cvt, F32Tile, 6, 2, bf16_conv_nhwc_6x16__avx2_fma,
              bf16_dwconv_nhwc__avx2_fma)
}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
