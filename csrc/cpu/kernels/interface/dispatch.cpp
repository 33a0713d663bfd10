// Picks the microkernel table for the running CPU: AVX-512 or AVX2+FMA when __builtin_cpu_supports says so
// (x86-64), NEON on aarch64 (always present there), the scalar fallback otherwise.
// MNV4_CPU_ISA=scalar|avx2|avx512|neon|auto overrides (read once, at the first call); an unavailable request
// falls back to the best table.
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "ukernels.h"

namespace mnv4 {
namespace cpu {

// Each table: its kernels, the ISA each is written for, and their register tiles (the constants the ISA
// files instantiate them with, ukernels.h).
static const UKernels kScalar{Isa::Scalar, "scalar",
                              {"scalar", "scalar", "scalar", "scalar", "scalar"},
                              kScalarTile, kScalarTile,
                              f32_gemm__scalar, f32_dwconv__scalar, x32_transpose__scalar, f32_dwconv_nhwc__scalar,
                              f32_conv_nhwc__scalar};
#if defined(__x86_64__) || defined(_M_X64)
static const UKernels kAvx2{Isa::Avx2Fma, "avx2_fma",
                            {"avx2_fma", "avx2_fma", "avx2_fma", "avx2_fma", "avx2_fma"},
                            kGemmAvx2Tile, kConvNhwcAvx2Tile,
                            f32_gemm_6x16__avx2_fma, f32_dwconv__avx2_fma, x32_transpose__avx2,
                            f32_dwconv_nhwc__avx2_fma, f32_conv_nhwc_6x16__avx2_fma};
// AVX-512F for both GEMMs and the NHWC depthwise conv. The channel-major depthwise conv and the transpose
// (used by the mqa op only) have no AVX-512 versions: this table holds the AVX2 ones.
static const UKernels kAvx512{Isa::Avx512, "avx512",
                              {"avx512", "avx2_fma", "avx2_fma", "avx512", "avx512"},
                              kGemmAvx512Tile, kConvNhwcAvx512Tile,
                              f32_gemm_8x32__avx512, f32_dwconv__avx2_fma, x32_transpose__avx2,
                              f32_dwconv_nhwc__avx512, f32_conv_nhwc_7x32__avx512};
#endif
#if defined(__aarch64__)
static const UKernels kNeon{Isa::Neon, "neon",
                            {"neon", "neon", "neon", "neon", "neon"},
                            kGemmNeonTile, kConvNhwcNeonTile,
                            f32_gemm_6x16__neon, f32_dwconv__neon, x32_transpose__neon, f32_dwconv_nhwc__neon,
                            f32_conv_nhwc_6x16__neon};
#endif

const UKernels* ukernels_for(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return &kScalar;
    case Isa::Avx2Fma:
#if defined(__x86_64__) || defined(_M_X64)
      if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &kAvx2;
#endif
      return nullptr;
    case Isa::Neon:
#if defined(__aarch64__)
      return &kNeon;
#endif
      return nullptr;
    case Isa::Avx512:
#if defined(__x86_64__) || defined(_M_X64)
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &kAvx512;
#endif
      return nullptr;
  }
  return nullptr;
}

static const UKernels* best() {
  for (Isa isa : {Isa::Avx512, Isa::Avx2Fma, Isa::Neon})
    if (const UKernels* k = ukernels_for(isa)) return k;
  return &kScalar;
}

static const UKernels* initial() {
  const char* env = std::getenv("MNV4_CPU_ISA");
  const UKernels* k = nullptr;
  if (env && std::strcmp(env, "scalar") == 0) k = ukernels_for(Isa::Scalar);
  if (env && std::strcmp(env, "avx2") == 0) k = ukernels_for(Isa::Avx2Fma);
  if (env && std::strcmp(env, "avx512") == 0) k = ukernels_for(Isa::Avx512);
  if (env && std::strcmp(env, "neon") == 0) k = ukernels_for(Isa::Neon);
  return k ? k : best();
}

const UKernels& ukernels() {
  static const UKernels* const k = initial();
  return *k;
}

}  // namespace cpu
}  // namespace mnv4
