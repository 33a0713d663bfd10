// NEON (fp32) microkernels: f32_gemm_6x16__neon and f32_conv_nhwc_6x16__neon (6 rows x 4 q-registers = 24
// accumulators of the 32: ukernels.h's kGemmNeonTile, kConvNhwcNeonTile), f32_dwconv_nhwc__neon,
// f32_dwconv__neon (4 output columns per q-register), x32_transpose__neon (4x4 register transposes).
// The code is the shared template in ../common/simd_impl.h with V = Neon. Compiled only for aarch64.
#if defined(__aarch64__)

#include <arm_neon.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "../interface/ukernels.h"
#include "vec_neon.h"

namespace mnv4 {
namespace cpu {
namespace neon {

using V = NeonVec;

#include "../common/simd_impl.h"

constexpr Tile kGemm = kGemmNeonTile, kConv = kConvNhwcNeonTile;
static_assert(kGemm.nr % V::W == 0 && kConv.nr % V::W == 0, "a tile's columns are whole q-registers");

}  // namespace neon

void f32_conv_nhwc_6x16__neon(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* A,
    int64_t lda, const float* B, int64_t ldb, int64_t bss, float* C, int64_t ldc, const float* bias, Act act,
    const float* R, int64_t ldr) {
  neon::pw_dispatch<neon::kConv.mr, neon::kConv.nr / neon::V::W>(M, N, K, T, off, A, lda, B, ldb, bss, C, ldc, bias,
                                                                  act, R, ldr);
}

void f32_dwconv_nhwc__neon(int64_t channels, int k, int s, const float* in, int64_t in_ps, int64_t in_rs,
                               int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw,
                               const float* bias, Act act, float* out, int64_t out_ps, int64_t out_rs, int64_t oy0,
                               int64_t oy1) {
  neon::dwn_dispatch(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, act, out, out_ps, out_rs, oy0,
                       oy1);
}

void f32_gemm_6x16__neon(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                         float* C, int64_t ldc, const float* bias, Act act, const float* R, int64_t ldr) {
  neon::gemm_dispatch<neon::kGemm.mr, neon::kGemm.nr / neon::V::W>(M, N, K, A, lda, B, ldb, C, ldc, bias, act, R,
                                                                    ldr);
}

void f32_dwconv__neon(int64_t channels, int k, int s, const float* in, int64_t in_cs, int64_t in_rs, int64_t in_r0,
                      int64_t in_h, int64_t in_w, const float* w, const float* bias, Act act, float* out,
                      int64_t out_cs, int64_t out_rs, int64_t oy0, int64_t oy1, float* scratch) {
  neon::dwconv_dispatch(channels, k, s, in, in_cs, in_rs, in_r0, in_h, in_w, w, bias, act, out, out_cs, out_rs, oy0,
                        oy1, scratch);
}

void x32_transpose__neon(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd) {
  int64_t r0 = 0;
  for (; r0 + 4 <= rows; r0 += 4) {
    int64_t c0 = 0;
    for (; c0 + 4 <= cols; c0 += 4) {
      const float* s = src + r0 * lds + c0;
      float32x4x2_t a = vtrnq_f32(vld1q_f32(s), vld1q_f32(s + lds));
      float32x4x2_t b = vtrnq_f32(vld1q_f32(s + 2 * lds), vld1q_f32(s + 3 * lds));
      float* d = dst + c0 * ldd + r0;
      vst1q_f32(d, vcombine_f32(vget_low_f32(a.val[0]), vget_low_f32(b.val[0])));
      vst1q_f32(d + ldd, vcombine_f32(vget_low_f32(a.val[1]), vget_low_f32(b.val[1])));
      vst1q_f32(d + 2 * ldd, vcombine_f32(vget_high_f32(a.val[0]), vget_high_f32(b.val[0])));
      vst1q_f32(d + 3 * ldd, vcombine_f32(vget_high_f32(a.val[1]), vget_high_f32(b.val[1])));
    }
    for (; c0 < cols; ++c0)
      for (int64_t r = r0; r < r0 + 4; ++r) dst[c0 * ldd + r] = src[r * lds + c0];
  }
  for (; r0 < rows; ++r0)
    for (int64_t c = 0; c < cols; ++c) dst[c * ldd + r0] = src[r0 * lds + c];
}

}  // namespace cpu
}  // namespace mnv4

#endif  // __aarch64__
