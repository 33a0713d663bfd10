// Row conversions between bf16 and fp32 for the ops' convert-on-load schedules (kernel_set.h,
// WideningKernelSet): plain loops the compiler vectorises, compiled once per vector ISA of the bf16 tables
// (AVX-512, AVX2 on x86-64; the build's baseline elsewhere) and picked by the running table's ISA, so a
// forced table (MNV4_CPU_LP_ISA=avx2) converts at the width an AVX2-only CPU has. The conversions are
// cpu::bf16_to_f32 / f32_to_bf16 (ukernels_bf16.h: to nearest even, NaN kept and quieted).
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernel_set.h"
#include "scratch.h"

namespace mnv4 {
namespace {

using cpu::bf16_t;

#define MNV4_ROWS_INLINE inline __attribute__((always_inline))

MNV4_ROWS_INLINE void widen_impl(int64_t rows, int64_t cols, const bf16_t* __restrict src, int64_t lds,
                                 float* __restrict dst, int64_t ldd) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * ldd + c] = cpu::bf16_to_f32(src[r * lds + c]);
}

MNV4_ROWS_INLINE void round_impl(int64_t rows, int64_t cols, const float* __restrict src, int64_t lds,
                                 const bf16_t* __restrict R, int64_t ldr, bf16_t* __restrict dst, int64_t ldd) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * lds;
    bf16_t* d = dst + r * ldd;
    if (R) {
      const bf16_t* q = R + r * ldr;
      for (int64_t c = 0; c < cols; ++c) d[c] = cpu::f32_to_bf16(s[c] + cpu::bf16_to_f32(q[c]));
    } else {
      for (int64_t c = 0; c < cols; ++c) d[c] = cpu::f32_to_bf16(s[c]);
    }
  }
}

#define MNV4_ROWS_VARIANT(SUFFIX, ATTR)                                                                        \
  ATTR void widen_##SUFFIX(int64_t rows, int64_t cols, const bf16_t* src, int64_t lds, float* dst,              \
                           int64_t ldd) {                                                                       \
    widen_impl(rows, cols, src, lds, dst, ldd);                                                                 \
  }                                                                                                             \
  ATTR void round_##SUFFIX(int64_t rows, int64_t cols, const float* src, int64_t lds, const bf16_t* R,          \
                           int64_t ldr, bf16_t* dst, int64_t ldd) {                                             \
    round_impl(rows, cols, src, lds, R, ldr, dst, ldd);                                                         \
  }

MNV4_ROWS_VARIANT(base, )
#if defined(__x86_64__) || defined(_M_X64)
MNV4_ROWS_VARIANT(avx2, __attribute__((target("avx2,fma"))))
MNV4_ROWS_VARIANT(avx512, __attribute__((target("avx512f,avx512bw,avx512vl"))))
#endif

}  // namespace

const Bf16Rows& bf16_rows(cpu::LpIsa isa) {
  static const Bf16Rows base{widen_base, round_base};
#if defined(__x86_64__) || defined(_M_X64)
  static const Bf16Rows avx2{widen_avx2, round_avx2};
  static const Bf16Rows avx512{widen_avx512, round_avx512};
  if (isa == cpu::LpIsa::Avx512F) return avx512;
  if (isa == cpu::LpIsa::Avx2) return avx2;
#endif
  (void)isa;
  return base;
}

float* widen_scratch(int64_t floats) {
  thread_local std::vector<float> arena;
  return aligned_scratch(arena, floats);
}

}  // namespace mnv4
