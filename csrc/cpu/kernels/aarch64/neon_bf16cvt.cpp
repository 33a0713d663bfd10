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


namespace mnv4 {
namespace cpu {
namespace neoncvt {

#define MNV4_LP_NEON_CVT 1
#include "lp_neon.h"
#include "../common/vec_math.h"
#include "../common/bf16_impl.h"

}  // namespace neoncvt

void bf16_conv_nhwc_6x16__neon(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const bf16_t* A,
                               int64_t lda, const bf16_t* B, int64_t bss, bf16_t* C, int64_t ldc, const float* bias,
                               Act act, const bf16_t* R, int64_t ldr) {
  using L = neoncvt::Bf16NeonCvt;
  neoncvt::lp_conv_dispatch<L, neoncvt::PairTile<L>, 6, 4>(M, N, K, T, off, A, lda, B, bss, C, ldc, bias, act, R, ldr);
}

void bf16_dwconv_nhwc__neon(int64_t channels, int k, int s, const bf16_t* in, int64_t in_ps, int64_t in_rs,
                            int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias,
                            Act act, bf16_t* out, int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
  neoncvt::lp_dw_dispatch<neoncvt::Bf16NeonCvt>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, act, out, out_ps,
                               out_rs, oy0, oy1);
}

}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // aarch64
