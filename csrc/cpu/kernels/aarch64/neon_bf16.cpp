// bf16 tables for aarch64 with BF16 (HWCAP2_BF16; Armv8.6, Neoverse V1/N2, Apple M2+): bf16_conv_nhwc_6x16__neonbf16: 6 pixels x 16
// channels, one BFDOT (vbfdotq_f32: two bf16 products per fp32 lane) per accumulator and k pair, the A pair
// broadcast from a general register. B layout bf16_kpair16, the BFDOT operand order. (BFMMLA, 2x2 blocks of
// 4-deep products, would need A as row pairs and B in k quads: another layout; not used.)
// bf16_dwconv_nhwc__neonbf16: bf16 in / out, fp32 taps and sums, BFCVTN rounding.
// The code is common/bf16_impl.h with L = Bf16NeonDot (aarch64/lp_neon.h).
#if defined(__aarch64__)

#include <arm_neon.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../interface/ukernels_bf16.h"
#include "vec_neon.h"

#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+bf16")

#define MNV4_LP_NS neonbf16
#define MNV4_LP_TRAITS "../aarch64/lp_neon.h"
#define MNV4_LP_NEON_BF16 1
#include "../common/lp_table.inc"

namespace mnv4 {
namespace cpu {
MNV4_LP_TABLE(bf16_t, neonbf16, Bf16NeonDot, PairTile, 6, 4, bf16_conv_nhwc_6x16__neonbf16, bf16_dwconv_nhwc__neonbf16)
}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // aarch64
