// The reduced-precision tables (interface/ukernels_bf16.h) and the pick for the running CPU: x86-64 by
// __builtin_cpu_supports (AMX also needs Linux's permission for the tile state: amx_bf16_usable), aarch64 by
// the hwcaps (HWCAP2_BF16, HWCAP_ASIMDHP). MNV4_CPU_LP_ISA=<table name> overrides (read once).
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "ukernels_bf16.h"

#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDHP
#define HWCAP_ASIMDHP (1 << 10)
#endif
#ifndef HWCAP2_BF16
#define HWCAP2_BF16 (1 << 14)
#endif
#endif

namespace mnv4 {
namespace cpu {

static const LpUKernels<bf16_t> kBf16Scalar{LpIsa::Scalar, "scalar", 1, kPackBf16Kpair32, 0, 0,
                                            bf16_conv_nhwc__scalar, bf16_dwconv_nhwc__scalar};
// The AMX kernel through the tile emulation: the epilogue and depthwise of a scalar table.
static const LpUKernels<bf16_t> kBf16AmxEmuPortable{LpIsa::AmxEmuPortable, "amx_emu_portable", 32, kPackBf16Kpair32,
                                                    0, 32, bf16_conv_nhwc_32x32__amx_emu_portable,
                                                    bf16_dwconv_nhwc__scalar};
static const LpUKernels<f16_t> kF16Scalar{LpIsa::Scalar, "scalar", 1, kPackF16K16, 0, 0, f16_conv_nhwc__scalar,
                                          f16_dwconv_nhwc__scalar};
// neon_fp16's GEMM arithmetic (its chunk, kNeonFp16AccChunk) in portable code, with the scalar depthwise conv
// (fp32 taps and sums, as neon_fp16's): the f16 ops' schedules with that arithmetic on every CPU (tests).
static const LpUKernels<f16_t> kF16NeonFp16Emu{LpIsa::NeonFp16Emu, "neon_fp16_emu", 4, kPackF16K16,
                                               kNeonFp16AccChunk, 0, f16_conv_nhwc__neonfp16_emu,
                                               f16_dwconv_nhwc__scalar};
// avx512fp16's GEMM kernel over portable fp16 vectors, with the scalar depthwise conv (tests, every CPU).
static const LpUKernels<f16_t> kF16Avx512Fp16Emu{LpIsa::Avx512Fp16Emu, "avx512fp16_emu", 8, kPackF16K32,
                                                 kAvx512Fp16AccChunk, 0, f16_conv_nhwc_8x32__avx512fp16_emu,
                                                 f16_dwconv_nhwc__scalar};
#if defined(__x86_64__) || defined(_M_X64)
static const LpUKernels<bf16_t> kBf16Avx512{LpIsa::Avx512F, "avx512", 7, kPackBf16Kpair32, 0, 0,
                                            bf16_conv_nhwc_7x32__avx512f, bf16_dwconv_nhwc__avx512f};
static const LpUKernels<bf16_t> kBf16Avx512Bf16{LpIsa::Avx512Bf16, "avx512bf16", 7, kPackBf16Kpair32, 0, 0,
                                                bf16_conv_nhwc_7x32__avx512bf16, bf16_dwconv_nhwc__avx512bf16};
static const LpUKernels<bf16_t> kBf16Amx{LpIsa::Amx, "amx", 32, kPackBf16Kpair32, 0, 32, bf16_conv_nhwc_32x32__amx,
                                         bf16_dwconv_nhwc__avx512bf16};
static const LpUKernels<bf16_t> kBf16AmxEmu{LpIsa::AmxEmu, "amx_emu", 32, kPackBf16Kpair32, 0, 32,
                                            bf16_conv_nhwc_32x32__amx_emu, bf16_dwconv_nhwc__avx512f};
static const LpUKernels<bf16_t> kBf16Avx2{LpIsa::Avx2, "avx2", 6, kPackBf16Kpair16, 0, 0, bf16_conv_nhwc_6x16__avx2_fma,
                                          bf16_dwconv_nhwc__avx2_fma};
static const LpUKernels<f16_t> kF16Avx512Fp16{LpIsa::Avx512Fp16, "avx512fp16", 8, kPackF16K32, kAvx512Fp16AccChunk,
                                              0, f16_conv_nhwc_8x32__avx512fp16, f16_dwconv_nhwc__avx512fp16};
static bool x86_avx512_bw_vl() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
}
#endif
#if defined(__aarch64__)
static const LpUKernels<bf16_t> kBf16Neon{LpIsa::Neon, "neon", 6, kPackBf16Kpair16, 0, 0, bf16_conv_nhwc_6x16__neon,
                                          bf16_dwconv_nhwc__neon};
static const LpUKernels<bf16_t> kBf16NeonBf16{LpIsa::NeonBf16, "neon_bf16", 6, kPackBf16Kpair16, 0, 0,
                                              bf16_conv_nhwc_6x16__neonbf16, bf16_dwconv_nhwc__neonbf16};
static const LpUKernels<f16_t> kF16NeonFp16{LpIsa::NeonFp16, "neon_fp16", 4, kPackF16K16, kNeonFp16AccChunk, 0,
                                            f16_conv_nhwc_4x16__neonfp16arith, f16_dwconv_nhwc__neonfp16arith};
#endif

#if !(defined(__x86_64__) || defined(_M_X64))
bool amx_bf16_usable(const char** why) {
  if (why) *why = "not an x86-64 build";
  return false;
}
#endif

static const LpUKernels<bf16_t>* bf16_for(LpIsa isa, const char** why) {
  const char* no = "not compiled in for this architecture";
  const LpUKernels<bf16_t>* k = nullptr;
  switch (isa) {
    case LpIsa::Scalar: k = &kBf16Scalar; break;
    case LpIsa::AmxEmuPortable: k = &kBf16AmxEmuPortable; break;
#if defined(__x86_64__) || defined(_M_X64)
    case LpIsa::Avx512F:
      if (x86_avx512_bw_vl()) k = &kBf16Avx512; else no = "the CPU lacks AVX-512 F/BW/VL";
      break;
    case LpIsa::Avx512Bf16:
      if (x86_avx512_bw_vl() && __builtin_cpu_supports("avx512bf16")) k = &kBf16Avx512Bf16;
      else no = "the CPU lacks AVX512-BF16";
      break;
    case LpIsa::Amx:
      if (amx_bf16_usable(&no)) k = &kBf16Amx;
      break;
    case LpIsa::AmxEmu:
      if (x86_avx512_bw_vl()) k = &kBf16AmxEmu; else no = "the CPU lacks AVX-512 F/BW/VL (its epilogue)";
      break;
    case LpIsa::Avx2:
      if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) k = &kBf16Avx2;
      else no = "the CPU lacks AVX2 / FMA";
      break;
#endif
#if defined(__aarch64__)
    case LpIsa::Neon: k = &kBf16Neon; break;
    case LpIsa::NeonBf16:
      if (getauxval(AT_HWCAP2) & HWCAP2_BF16) k = &kBf16NeonBf16; else no = "the CPU lacks BF16 (HWCAP2_BF16)";
      break;
#endif
    default: break;
  }
  if (!k && why) *why = no;
  return k;
}

static const LpUKernels<f16_t>* f16_for(LpIsa isa, const char** why) {
  const char* no = "not compiled in for this architecture";
  const LpUKernels<f16_t>* k = nullptr;
  switch (isa) {
    case LpIsa::Scalar: k = &kF16Scalar; break;
    case LpIsa::NeonFp16Emu: k = &kF16NeonFp16Emu; break;
    case LpIsa::Avx512Fp16Emu: k = &kF16Avx512Fp16Emu; break;
#if defined(__x86_64__) || defined(_M_X64)
    case LpIsa::Avx512Fp16:
      if (x86_avx512_bw_vl() && __builtin_cpu_supports("avx512fp16")) k = &kF16Avx512Fp16;
      else no = "the CPU lacks AVX512-FP16";
      break;
#endif
#if defined(__aarch64__)
    case LpIsa::NeonFp16:
      if (getauxval(AT_HWCAP) & HWCAP_ASIMDHP) k = &kF16NeonFp16; else no = "the CPU lacks FP16 (HWCAP_ASIMDHP)";
      break;
#endif
    default: no = "no f16 table of this ISA"; break;
  }
  if (!k && why) *why = no;
  return k;
}

template <>
const LpUKernels<bf16_t>* lp_ukernels_for<bf16_t>(LpIsa isa, const char** why) { return bf16_for(isa, why); }
template <>
const LpUKernels<f16_t>* lp_ukernels_for<f16_t>(LpIsa isa, const char** why) { return f16_for(isa, why); }

// Best first; the emulated tables (AMX, neon_fp16_emu, avx512fp16_emu) are for the tests only.
static constexpr LpIsa kBf16Order[] = {LpIsa::Amx,      LpIsa::Avx512Bf16, LpIsa::Avx512F,
                                       LpIsa::Avx2,     LpIsa::NeonBf16,   LpIsa::Neon};
static constexpr LpIsa kF16Order[] = {LpIsa::Avx512Fp16, LpIsa::NeonFp16};
static constexpr LpIsa kAllIsas[] = {LpIsa::Scalar, LpIsa::Avx512F, LpIsa::Avx512Bf16, LpIsa::Amx, LpIsa::AmxEmu,
                                     LpIsa::AmxEmuPortable, LpIsa::Neon, LpIsa::NeonBf16, LpIsa::NeonFp16,
                                     LpIsa::Avx2, LpIsa::NeonFp16Emu, LpIsa::Avx512Fp16, LpIsa::Avx512Fp16Emu};

// Whether the avx512bf16 table beats the convert-on-load avx512 one here: its dot product must outrun the fp32
// FMAs (ukernels_bf16.h, avx512bf16_dot_rate; on an Intel core without AMX, or with AMX refused, it does not).
static bool dot_pays() {
#if defined(__x86_64__) || defined(_M_X64)
  return avx512bf16_dot_rate() > 1.0;
#else
  return true;
#endif
}

template <class E, size_t NO>
static const LpUKernels<E>* initial(const LpIsa (&order)[NO]) {
  if (const char* env = std::getenv("MNV4_CPU_LP_ISA"))
    for (LpIsa isa : kAllIsas)
      if (const LpUKernels<E>* k = lp_ukernels_for<E>(isa))
        if (std::strcmp(k->name, env) == 0) return k;
  for (LpIsa isa : order)
    if (const LpUKernels<E>* k = lp_ukernels_for<E>(isa))
      if (isa != LpIsa::Avx512Bf16 || dot_pays()) return k;
  return lp_ukernels_for<E>(LpIsa::Scalar);
}

template <>
const LpUKernels<bf16_t>& lp_ukernels<bf16_t>() {
  static const LpUKernels<bf16_t>* k = initial<bf16_t>(kBf16Order);
  return *k;
}
template <>
const LpUKernels<f16_t>& lp_ukernels<f16_t>() {
  static const LpUKernels<f16_t>* k = initial<f16_t>(kF16Order);
  return *k;
}

}  // namespace cpu
}  // namespace mnv4
