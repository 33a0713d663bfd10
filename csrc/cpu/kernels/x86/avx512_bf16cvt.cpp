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

#define MNV4_LP_NS avx512cvt
#define MNV4_LP_TRAITS "../x86/lp_avx512.h"
#define MNV4_LP_AMX 1
#include "../common/lp_table.inc"

namespace mnv4 {
namespace cpu {
MNV4_LP_TABLE(bf16_t, avx512cvt, Bf16Avx512Cvt, F32Tile, 7, 2, bf16_conv_nhwc_7x32__avx512f, bf16_dwconv_nhwc__avx512f)
MNV4_LP_CONV_ENTRY(bf16_t, bf16_conv_nhwc_32x32__amx_emu,
                   avx512cvt::amx_conv_dispatch<AmxEmuTiles, avx512cvt::Bf16Avx512Cvt>)
}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
