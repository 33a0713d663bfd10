// bf16_conv_nhwc_32x32__amx: the AMX-BF16 conv kernel (common/amx_conv_impl.h) over the tile instructions
// (x86/amx_tiles.h), epilogue in AVX-512 with vcvtneps2bf16 (every AMX CPU has AVX512-BF16). B layout
// bf16_kpair32, as the AVX-512 tables. interface/dispatch_bf16.cpp calls in only after amx_bf16_usable(): the
// CPU has AMX-TILE and AMX-BF16 and Linux granted the tile data state (arch_prctl(ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA), once per process; without it the first tile instruction faults).
#if defined(__x86_64__) || defined(_M_X64)

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../interface/ukernels_bf16.h"

#include <immintrin.h>

namespace mnv4 {
namespace cpu {

bool amx_bf16_usable(const char** why) {
  static const char* reason = [] () -> const char* {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16"))
      return "the CPU has no AMX-TILE / AMX-BF16";
    if (!__builtin_cpu_supports("avx512bf16") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl"))
      return "the CPU has AMX but not AVX512-BF16/BW/VL (the kernel's epilogue)";
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0)
      return "Linux refused the AMX tile data state (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA))";
    return nullptr;
  }();
  if (why) *why = reason;
  return reason == nullptr;
}

}  // namespace cpu
}  // namespace mnv4

// Avx512Vec under avx512.cpp's exact target: see x86/lp_avx512.h
#pragma GCC push_options
#pragma GCC target("avx512f,fma,prfchw")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "vec_avx512.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,fma,prfchw,amx-tile,amx-bf16")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "amx_tiles.h"

#define MNV4_LP_NS amx
#define MNV4_LP_TRAITS "../x86/lp_avx512.h"
#define MNV4_LP_AVX512_DP 1
#define MNV4_LP_AMX 1
#include "../common/lp_table.inc"

namespace mnv4 {
namespace cpu {
MNV4_LP_CONV_ENTRY(bf16_t, bf16_conv_nhwc_32x32__amx, amx::amx_conv_dispatch<AmxNativeTiles, amx::Bf16Avx512Dp>)
}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
