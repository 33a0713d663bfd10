// bf16 tables for aarch64 without BF16: convert-on-load. bf16_conv_nhwc_6x16__neon: 6 pixels x 16 channels (24 q-register
// accumulators, as f32_conv_nhwc_6x16__neon), A's pairs and B's kpair16 rows unpacked to fp32 in registers (a shift
// and a mask), fp32 FMLAs: the fp32 kernel's arithmetic on half its operand bytes. bf16_dwconv_nhwc__neon: bf16
// in / out, fp32 taps and sums.
// The code is common/bf16_impl.h with L = Bf16NeonCvt (aarch64/lp_neon.h).
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


#define MNV4_LP_NS neoncvt
#define MNV4_LP_TRAITS "../aarch64/lp_neon.h"
#define MNV4_LP_NEON_CVT 1
#include "../common/lp_table.inc"

namespace mnv4 {
namespace cpu {
MNV4_LP_TABLE(bf16_t, neoncvt, Bf16NeonCvt, PairTile, 6, 4, bf16_conv_nhwc_6x16__neon, bf16_dwconv_nhwc__neon)
}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // aarch64
