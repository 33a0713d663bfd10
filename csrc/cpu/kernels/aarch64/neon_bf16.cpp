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

namespace mnv4 {
namespace cpu {
namespace neonbf16 {

#define MNV4_LP_NEON_BF16 1
#include "lp_neon.h"
#include "../common/vec_math.h"
#include "../common/bf16_impl.h"

}  // namespace neonbf16

void bf16_conv_nhwc_6x16__neonbf16(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const bf16_t* A,
                               int64_t lda, const bf16_t* B, int64_t bss, bf16_t* C, int64_t ldc, const float* bias,
                               Act act, const bf16_t* R, int64_t ldr) {
  using L = neonbf16::Bf16NeonDot;
  neonbf16::lp_conv_dispatch<L, neonbf16::PairTile<L>, 6, 4>(M, N, K, T, off, A, lda, B, bss, C, ldc, bias, act, R, ldr);
}

void bf16_dwconv_nhwc__neonbf16(int64_t channels, int k, int s, const bf16_t* in, int64_t in_ps, int64_t in_rs,
                            int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias,
                            Act act, bf16_t* out, int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
  neonbf16::lp_dw_dispatch<neonbf16::Bf16NeonDot>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, act, out, out_ps,
                               out_rs, oy0, oy1);
}

}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // aarch64
