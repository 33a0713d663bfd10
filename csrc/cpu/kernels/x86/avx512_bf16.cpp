// bf16 tables on AVX-512 CPUs with AVX512-BF16 (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 / 5):
//   bf16_conv_nhwc_7x32__avx512bf16: 7 pixels x 32 channels (14 zmm accumulators, as the fp32
//     f32_conv_nhwc_7x32__avx512), one vdpbf16ps per accumulator and k pair: twice the fp32 kernel's
//     multiply-adds per instruction, half its bytes. B layout bf16_kpair32. The stems' conv (3 channels, 3x3,
//     stride 2) runs 14 pixels x 32 channels with its shape compiled in (bf16_impl.h's LpStemShape).
//   bf16_dwconv_nhwc__avx512bf16: bf16 in / out, fp32 taps and sums, vcvtneps2bf16 rounding.
// The code is common/bf16_impl.h with L = Bf16Avx512Dp (x86/lp_avx512.h). interface/dispatch_bf16.cpp calls
// in only when __builtin_cpu_supports reports avx512bf16 (and avx512f, bw, vl).
//   avx512bf16_dot_rate: how many multiply-adds vdpbf16ps does per unit of time against vfmadd231ps, measured
//     on this core (register-only loops, as benches/peak.c): the automatic pick's test (interface/
//     dispatch_bf16.cpp), since the instruction's rate differs by design: ~2 on AMD Zen 4 (236 against 118
//     GFLOP/s a core), ~0.5 on an Intel Xeon with AMX (~100 against ~200: benches/results/bf16-kernels-*).
#if defined(__x86_64__) || defined(_M_X64)

#include <algorithm>
#include <chrono>
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
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,fma,prfchw")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define MNV4_LP_NS avx512bf16
#define MNV4_LP_TRAITS "../x86/lp_avx512.h"
#define MNV4_LP_AVX512_DP 1
#include "../common/lp_table.inc"

namespace mnv4 {
namespace cpu {
MNV4_LP_TABLE(bf16_t, avx512bf16, Bf16Avx512Dp, PairTile, 7, 2, bf16_conv_nhwc_7x32__avx512bf16,
              bf16_dwconv_nhwc__avx512bf16)

namespace {
// Seconds for `iters` rounds of kChains independent chains of one instruction (enough chains to cover the
// latency of either at its throughput, unrolled so they stay in registers, as benches/peak.c's loops); the
// chains' sum leaves through an asm operand, so no round is dropped.
constexpr int kChains = 12;
template <bool DOT>
double chain_seconds(long iters) {
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(0.001f * float(j));
  const __m512 x = _mm512_set1_ps(0.5f), y = _mm512_set1_ps(0.25f);
  const __m512bh a = _mm512_cvtne2ps_pbh(x, x), b = _mm512_cvtne2ps_pbh(y, y);
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < kChains; ++j) acc[j] = DOT ? _mm512_dpbf16_ps(acc[j], a, b) : _mm512_fmadd_ps(x, y, acc[j]);
  }
  const auto t1 = std::chrono::steady_clock::now();
  __m512 sum = acc[0];
  for (int j = 1; j < kChains; ++j) sum = _mm512_add_ps(sum, acc[j]);
  __asm__ __volatile__("" : : "v"(sum));
  return std::chrono::duration<double>(t1 - t0).count();
}
}  // namespace

double avx512bf16_dot_rate() {
  // the best of 4 alternating tries of each (~60 and ~60-250 us), after a warm-up that brings the 512-bit
  // units to speed (shorter loops read the FMAs at half their rate here)
  constexpr long kIters = 16384;
  chain_seconds<false>(kIters);
  double fma = 1e30, dot = 1e30;
  for (int r = 0; r < 4; ++r) {
    fma = std::min(fma, chain_seconds<false>(kIters));
    dot = std::min(dot, chain_seconds<true>(kIters));
  }
  return 2.0 * fma / dot;  // a vdpbf16ps does 32 multiply-adds, a vfmadd231ps 16
}
}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
