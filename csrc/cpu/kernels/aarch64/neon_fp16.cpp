// f16 table for aarch64 with FP16 arithmetic (HWCAP_ASIMDHP; Armv8.2 cores: Cortex-A55/A75 and later):
//   f16_conv_nhwc_4x16__neonfp16arith: 4 pixels x 16 channels. FMLA .8h by element (vfmaq_laneq_f16: 8 fp16
//     multiply-adds per instruction, twice the fp32 FMLA's) into fp16 accumulators for one chunk of 8 k (the 8
//     lanes of one A register), then widened (FCVTL) and added into fp32 accumulators. Accumulation: fp16 within a
//     chunk, fp32 across chunks. Why: fp16 sums of the whole K (as fp16 GEMMs often do) err like sqrt(K) fp16
//     roundings of the partial sums, ~20x the output's rounding at K = 960; 8-product chunks bound the extra
//     error by gamma_8(2^-11) of the chunk's sum of |products| (typically about the output's own rounding),
//     whatever K, and keep most of the 2x of FMLA .8h (per 8 k and 16 channels: 16 FMLA .8h + 4 FCVTL/FADD
//     pairs vs 32 fp32 FMLAs). The chunk length is the table's f16_acc_chunk (the tests derive their tolerance
//     from it). A chunk's partial sums beyond the fp16 range (65504) overflow to inf, as fp16 storage would.
//     Registers: 16 fp32 + 8 fp16 accumulators, 4 A, 2 B of the 32. B layout f16_k16.
//   f16_dwconv_nhwc__neonfp16arith: f16 in / out (FCVTL / FCVTN), fp32 taps and sums: common/bf16_impl.h.
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
#pragma GCC target("arch=armv8.2-a+fp16")

#define MNV4_LP_NS neonfp16
#define MNV4_LP_TRAITS "../aarch64/lp_neon.h"
#define MNV4_LP_NEON_FP16 1
#include "../common/lp_table.inc"

namespace mnv4 {
namespace cpu {
namespace neonfp16 {

constexpr int kChunk = kNeonFp16AccChunk;  // ukernels_bf16.h

struct F16Tile : LpInPlace<F16Neon> {
  template <int MR, int NV, int NVS, Act A, bool RES, bool TAIL>
  static inline void tile(int64_t K, int T, const int64_t* off, const f16_t* a, int64_t lda, const f16_t* b, f16_t* c,
                          int64_t ldc, const float* bias, const f16_t* r, int64_t ldr, int nrem, int64_t /*i0*/,
                          const void* /*pf*/, int64_t /*pf_lines*/) {
    constexpr int NH = (NV + 1) / 2;  // fp16 vectors (8 lanes) covering NV fp32 vectors (4 lanes)
    constexpr int64_t NR = NVS * 4;   // elements per slab row
    float32x4_t acc[MR][NV];
    for (int v = 0; v < NV; ++v) {
      const float32x4_t b0 = bias ? (TAIL ? NeonVec::loadn(bias + v * 4, nrem - v * 4) : vld1q_f32(bias + v * 4))
                                  : vdupq_n_f32(0.f);
      for (int i = 0; i < MR; ++i) acc[i][v] = b0;
    }
    for (int t = 0; t < T; ++t) {
      const f16_t* at = a + off[t];
      const f16_t* bt = b + t * K * NR;
      for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
        const int kn = static_cast<int>(std::min<int64_t>(kChunk, K - k0));
        float16x8_t av[MR];
        for (int i = 0; i < MR; ++i) {
          const f16_t* ai = at + i * lda + k0;
          if (kn == kChunk) {
            av[i] = vreinterpretq_f16_u16(vld1q_u16(&ai->bits));
          } else {  // the K tail: only elements < K are read, the rest are zero
            uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int q = 0; q < kn; ++q) tmp[q] = ai[q].bits;
            av[i] = vreinterpretq_f16_u16(vld1q_u16(tmp));
          }
        }
        float16x8_t h[MR][NH];
        for (int i = 0; i < MR; ++i)
          for (int q = 0; q < NH; ++q) h[i][q] = vreinterpretq_f16_u16(vdupq_n_u16(0));
#define MNV4_F16_LANE(l)                                                                         \
  if (l < kn) {                                                                                  \
    const f16_t* bk = bt + (k0 + l) * NR;                                                        \
    float16x8_t bv[NH];                                                                          \
    for (int q = 0; q < NH; ++q) bv[q] = vreinterpretq_f16_u16(vld1q_u16(&bk[q * 8].bits));      \
    for (int i = 0; i < MR; ++i)                                                                 \
      for (int q = 0; q < NH; ++q) h[i][q] = vfmaq_laneq_f16(h[i][q], bv[q], av[i], l);          \
  }
        MNV4_F16_LANE(0) MNV4_F16_LANE(1) MNV4_F16_LANE(2) MNV4_F16_LANE(3)
        MNV4_F16_LANE(4) MNV4_F16_LANE(5) MNV4_F16_LANE(6) MNV4_F16_LANE(7)
#undef MNV4_F16_LANE
        for (int i = 0; i < MR; ++i)
          for (int q = 0; q < NH; ++q) {
            acc[i][2 * q] = vaddq_f32(acc[i][2 * q], vcvt_f32_f16(vget_low_f16(h[i][q])));
            if (2 * q + 1 < NV) acc[i][2 * q + 1] = vaddq_f32(acc[i][2 * q + 1], vcvt_high_f32_f16(h[i][q]));
          }
      }
    }
    for (int i = 0; i < MR; ++i)
      lp_store_row<F16Neon, NV, A, RES, TAIL>(acc[i], c + i * ldc, RES ? r + i * ldr : nullptr, nrem);
  }
};

}  // namespace neonfp16

MNV4_LP_CONV_ENTRY(f16_t, f16_conv_nhwc_4x16__neonfp16arith,
                   neonfp16::lp_conv_dispatch<neonfp16::F16Neon, neonfp16::F16Tile, 4, 4>)
MNV4_LP_DW_ENTRY(f16_t, f16_dwconv_nhwc__neonfp16arith, neonfp16::lp_dw_dispatch<neonfp16::F16Neon>)

}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // aarch64
