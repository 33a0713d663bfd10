// bf16 tables for AVX-512 CPUs without AVX512-BF16 (Skylake-SP, Cascade Lake, Ice Lake): convert-on-load.
//   bf16_conv_nhwc_7x32__avx512f: the 7 x 32 tile of the fp32 kernel on operands widened to fp32 once per row
//     block (A) and per row block and slab (B's kpair32 rows, a shift and a mask, by the slab's first row tile):
//     F32Tile, common/bf16_impl.h. The k loop is the fp32 kernel's; the weights cross memory in bf16.
//   bf16_dwconv_nhwc__avx512f: bf16 in / out, fp32 taps and sums, rounding in integer lanes.
//   bf16_conv_nhwc_32x32__amx_emu: the AMX kernel (common/amx_conv_impl.h) over the portable tile emulation
//     with this file's AVX-512 epilogue: the native AMX kernel's code paths but its tile instructions, for the
//     tests on CPUs without AMX (never picked for computing).
// Needs avx512f, avx512bw, avx512vl (interface/dispatch_bf16.cpp checks them).
#if defined(__x86_64__) || defined(_M_X64)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/amx_tiles_emu.h"
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
#pragma GCC target("avx512f,avx512bw,avx512vl,fma,prfchw")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace mnv4 {
namespace cpu {
namespace avx512cvt {

#include "lp_avx512.h"
#include "../common/vec_math.h"
#include "../common/bf16_impl.h"
#include "../common/amx_conv_impl.h"

}  // namespace avx512cvt

void bf16_conv_nhwc_7x32__avx512f(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const bf16_t* A,
                                  int64_t lda, const bf16_t* B, int64_t bss, bf16_t* C, int64_t ldc, const float* bias,
                                  Act act, const bf16_t* R, int64_t ldr) {
  using L = avx512cvt::Bf16Avx512Cvt;
  avx512cvt::lp_conv_dispatch<L, avx512cvt::F32Tile<L>, 7, 2>(M, N, K, T, off, A, lda, B, bss, C, ldc, bias, act, R,
                                                               ldr);
}

void bf16_dwconv_nhwc__avx512f(int64_t channels, int k, int s, const bf16_t* in, int64_t in_ps, int64_t in_rs,
                               int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw,
                               const float* bias, Act act, bf16_t* out, int64_t out_ps, int64_t out_rs, int64_t oy0,
                               int64_t oy1) {
  avx512cvt::lp_dw_dispatch<avx512cvt::Bf16Avx512Cvt>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw,
                                                      bias, act, out, out_ps, out_rs, oy0, oy1);
}

void bf16_conv_nhwc_32x32__amx_emu(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const bf16_t* A,
                                   int64_t lda, const bf16_t* B, int64_t bss, bf16_t* C, int64_t ldc,
                                   const float* bias, Act act, const bf16_t* R, int64_t ldr) {
  avx512cvt::amx_conv_dispatch<AmxEmuTiles, avx512cvt::Bf16Avx512Cvt>(M, N, K, T, off, A, lda, B, bss, C, ldc, bias,
                                                                      act, R, ldr);
}

}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
