// Picks the microkernel table for the running CPU: AVX-512 (NHWC kernels; the rest AVX2) or AVX2+FMA when
// __builtin_cpu_supports says so (x86-64), NEON on aarch64 (always present there), the scalar fallback
// otherwise. MNV4_CPU_ISA=scalar|avx2|avx512|neon|auto
// overrides (read once, at the first call); an unavailable request falls back to the best table.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "ukernels.h"

namespace mnv4 {
namespace cpu {

// gemm_nr / gemm_mr: the NHWC GEMM's register tile, as instantiated in each ISA's conv_nhwc entry point
// (pw_dispatch<MR, NV>: AVX-512 <7, 2> x 16 lanes, AVX2 <6, 2> x 8, NEON <6, 4> x 4). gemm_mr only steers
// schedules (conv.cpp); a wrong value costs speed, not results.
static const UKernels kScalar{Isa::Scalar, "scalar", 1, 1, f32_gemm__scalar, f32_dwconv__scalar,
                              x32_transpose__scalar, f32_dwconv_nhwc__scalar,
                              f32_conv_nhwc__scalar};
#if defined(__x86_64__) || defined(_M_X64)
static const UKernels kAvx2{Isa::Avx2Fma, "avx2_fma", 16, 6, f32_gemm_6x16__avx2_fma, f32_dwconv__avx2_fma,
                            x32_transpose__avx2, f32_dwconv_nhwc__avx2_fma,
                            f32_conv_nhwc_6x16__avx2_fma};
#endif
#if defined(__x86_64__) || defined(_M_X64)
static const UKernels kAvx512{Isa::Avx512, "avx512", 32, 7, f32_gemm_8x32__avx512, f32_dwconv__avx2_fma,
                              x32_transpose__avx2, f32_dwconv_nhwc__avx512, f32_conv_nhwc_7x32__avx512};
#endif
#if defined(__aarch64__)
static const UKernels kNeon{Isa::Neon, "neon", 16, 6, f32_gemm_6x16__neon, f32_dwconv__neon, x32_transpose__neon,
                            f32_dwconv_nhwc__neon, f32_conv_nhwc_6x16__neon};
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

static std::atomic<const UKernels*>& current() {
  static std::atomic<const UKernels*> cur{initial()};
  return cur;
}

const UKernels& ukernels() { return *current().load(std::memory_order_relaxed); }

bool set_ukernels(Isa isa) {
  const UKernels* k = ukernels_for(isa);
  if (!k) return false;
  current().store(k, std::memory_order_relaxed);
  return true;
}

}  // namespace cpu
}  // namespace mnv4
