// f16 table for AVX512-FP16 CPUs (Intel Sapphire Rapids and later):
//   f16_conv_nhwc_8x32__avx512fp16: 8 pixels x 32 channels. vfmadd231ph (32 fp16 multiply-adds per instruction,
//     twice vfmadd231ps's) into one fp16 accumulator per row for a chunk of kAvx512Fp16AccChunk k, then widened
//     (vcvtph2ps) into two fp32 accumulators: common/f16_fma_impl.h with H = Fp16Avx512H (x86/lp_avx512.h).
//     Accumulation: fp16 within a chunk, fp32 across chunks (aarch64/neon_fp16.cpp: why). B layout f16_k32.
//   f16_dwconv_nhwc__avx512fp16: f16 in / out (vcvtph2ps / vcvtps2ph), fp32 taps and sums: common/bf16_impl.h.
// interface/dispatch_bf16.cpp calls in only when __builtin_cpu_supports reports avx512fp16 (and avx512f, bw, vl).
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
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512fp16,f16c,fma,prfchw")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define MNV4_LP_NS avx512fp16
#define MNV4_LP_TRAITS "../x86/lp_avx512.h"
#define MNV4_LP_AVX512_FP16 1
#define MNV4_LP_F16_FMA 1
#include "../common/lp_table.inc"

namespace mnv4 {
namespace cpu {

MNV4_LP_CONV_ENTRY(f16_t, f16_conv_nhwc_8x32__avx512fp16,
                   avx512fp16::lp_conv_dispatch<avx512fp16::F16Avx512,
                                                avx512fp16::F16FmaTile<avx512fp16::F16Avx512, avx512fp16::Fp16Avx512H,
                                                                       kAvx512Fp16AccChunk>,
                                                8, 2>)
MNV4_LP_DW_ENTRY(f16_t, f16_dwconv_nhwc__avx512fp16, avx512fp16::lp_dw_dispatch<avx512fp16::F16Avx512>)

}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
