// Torch-free reduced-precision microkernels (bf16 everywhere, fp16 on aarch64): raw pointers, no torch headers.
// Same NHWC contracts as the fp32 kernels of ukernels.h (activations [pixels][C], channels contiguous), with the
// activations stored in the reduced type E (bf16_t or f16_t) and every sum, bias, activation and residual add
// computed in fp32 registers; each output element is rounded to E once, to nearest even.
//
// Tables (one registry, lp_ukernels<E>() / lp_ukernels_for<E>(isa)):
//   bf16: scalar (fallback/, the oracle), avx512f (x86 without AVX512-BF16: convert-on-load, fp32 FMAs),
//         avx512bf16 (vdpbf16ps), amx (tdpbf16ps over the tile layer of x86/amx_tiles.h), amx_emu and
//         amx_emu_portable (the same AMX kernel over the portable tile emulation: tests; never picked by
//         auto), neon (aarch64 convert-on-load), neon_bf16 (BFDOT).
//   f16:  scalar, neon_fp16 (FMLA .8h).
// MNV4_CPU_LP_ISA=<table name> (read once) forces a table; unset = the best the CPU has (amx > avx512bf16 >
// avx512f > scalar on x86-64; neon_bf16 > neon for bf16, neon_fp16 for f16 on aarch64).
#pragma once

#include <cstddef>
#include <cstdint>

#include "ukernels.h"  // Act

namespace mnv4 {
namespace cpu {

// Storage types: the bits of a bfloat16 / IEEE binary16 value (layout-compatible with at::BFloat16 /
// at::Half, so a tensor's data pointer can be reinterpret_cast to them).
struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};

// Conversions (round to nearest even; NaN stays NaN, quieted). Exact in the other direction.
float bf16_to_f32(bf16_t h);
bf16_t f32_to_bf16(float f);
float f16_to_f32(f16_t h);
f16_t f32_to_f16(float f);  // overflow gives +-inf, as a hardware conversion

// Dense NHWC conv as T shifted products of packed weights (the reduced-precision f32_conv_nhwc_fn):
//   C[m*ldc + n] = rnd(act(sum_{t<T} sum_{k<K} A[m*lda + off[t] + k] * W(t, k, n) + bias[n]) + R[m*ldr + n])
//   for m < M, n < N; rnd = round to E. A: bf16/f16 pixel rows (element strides; reads A[m*lda + off[t] + k]
//   for k < K only: an odd K never reads past the row). W: the weight packed by the table's `pack` (see
//   LpPack below), slab j (columns [j*NR, j*NR + NR)) at B + j*bss: bss = pack's slab stride, or larger for
//   a caller that packs several matrices apart; columns [n0, n0 + N) of a packed matrix (n0 a multiple of
//   NR) are B + (n0/NR)*bss. bias: N floats or nullptr. R: nullptr or the residual in E, added after the
//   activation, in fp32, before the one rounding. C must not alias A, B, bias; C == R is allowed when
//   ldr == ldc. K == 0 gives rnd(act(bias) + R). Writes C[m][n], m < M, n < N and nothing else.
//   A 1x1 conv is T = 1, off = {0}; a k x k conv over a zero-padded row band is as in f32_conv_nhwc_fn.
//   NaN in A[m][..] or W(.., n) makes exactly the outputs that use it NaN (relu and gelu propagate NaN).
template <class E>
using lp_conv_nhwc_fn = void (*)(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const E* A,
                                 int64_t lda, const E* B, int64_t bss, E* C, int64_t ldc, const float* bias,
                                 Act act, const E* R, int64_t ldr);

// Depthwise k x k conv (k odd), stride s (1 or 2), zero padding k/2: f32_dwconv_nhwc_fn with the input and
// output in E (same element strides: in_ps, in_rs, out_ps, out_rs count elements of E) and the weights and
// bias in fp32 (taps-major w[(i*k + j)*ldw + c]: the fp32 kernels' layout, so one packed copy serves both;
// k*k*C floats stay in L2, and fp32 taps spare a conversion per tap and pixel).
//   out = rnd(act(bias[c] + sum_{i,j} w * in(oy*s+i-k/2, ox*s+j-k/2))). Writes only those elements.
template <class E>
using lp_dwconv_nhwc_fn = void (*)(int64_t channels, int k, int s, const E* in, int64_t in_ps, int64_t in_rs,
                                   int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw,
                                   const float* bias, Act act, E* out, int64_t out_ps, int64_t out_rs, int64_t oy0,
                                   int64_t oy1);

// Packed weight layouts. A weight W(t, k, n), t < T taps, k < K, n < N, is given row-major as fp32
// w[(t*K + k)*ldw + n] (a 1x1 conv's [Cin][Cout]; a k x k conv's [ky][kx][Cin][Cout]) and rounded to E once.
// Slab j holds columns [j*NR, j*NR + NR), zero-padded past N; slab stride = T * round_up(K, kpair) * NR.
//   kpair == 2 ("kpair<NR>": bf16 pairs interleaved along K, the operand layout of vdpbf16ps, tdpbf16ps B
//     tiles and BFDOT): Kp = ceil(K / 2) pairs per tap, the odd K's last pair zero-padded:
//       slab[((t*Kp + k/2)*NR + n%NR)*2 + k%2] = W(t, k, n)
//   kpair == 1 ("k<NR>": k-major rows of NR values, the operand layout of FMLA .8h):
//       slab[(t*K + k)*NR + n%NR] = W(t, k, n)
// `name` (e.g. "bf16_kpair32") identifies the layout: two tables with the same name read the same bytes, so
// a weight cache keys packed weights on it.
struct LpPack {
  const char* name;
  int nr;     // columns per slab
  int kpair;  // 2: pairs along K; 1: k-major
};
// The layouts the tables use (queryable as LpUKernels::pack).
inline constexpr LpPack kPackBf16Kpair32{"bf16_kpair32", 32, 2};  // scalar, avx512, avx512bf16, amx
inline constexpr LpPack kPackBf16Kpair16{"bf16_kpair16", 16, 2};  // neon, neon_bf16
inline constexpr LpPack kPackF16K16{"f16_k16", 16, 1};            // scalar f16, neon_fp16
// Elements of E that the packed (T, K, N) weight occupies (= slabs * slab stride).
int64_t lp_packed_size(const LpPack& p, int T, int64_t K, int64_t N);
int64_t lp_slab_stride(const LpPack& p, int T, int64_t K);
// Packs w (see above) into `packed` (lp_packed_size elements; every element written, padding zero).
void lp_pack(const LpPack& p, int T, int64_t K, int64_t N, const float* w, int64_t ldw, bf16_t* packed);
void lp_pack(const LpPack& p, int T, int64_t K, int64_t N, const float* w, int64_t ldw, f16_t* packed);

enum class LpIsa : int {
  Scalar = 0,
  Avx512F = 1,      // bf16: convert-on-load (bf16 -> fp32 is a 16-bit shift), fp32 FMAs
  Avx512Bf16 = 2,   // bf16: vdpbf16ps
  Amx = 3,          // bf16: AMX-BF16 tiles (native)
  AmxEmu = 4,       // bf16: the AMX kernel over the tile emulation, AVX-512 epilogue (tests, x86 with avx512f)
  AmxEmuPortable = 5,  // bf16: the AMX kernel over the tile emulation, scalar epilogue (tests, every CPU)
  Neon = 6,         // bf16: aarch64 convert-on-load
  NeonBf16 = 7,     // bf16: BFDOT
  NeonFp16 = 8,     // f16: FMLA .8h
};

template <class E>
struct LpUKernels {
  LpIsa isa;
  const char* name;
  int gemm_mr;         // rows (pixels) of conv_nhwc's register / tile block (steers schedules only)
  LpPack pack;         // conv_nhwc's B layout; pack.nr is the slab width
  int f16_acc_chunk;   // 0: fp32 accumulation; else products are summed in E for chunks of this many k
                       // (per tap) before the fp32 accumulator takes over (neon_fp16: see aarch64/neon_bf16.cpp)
  lp_conv_nhwc_fn<E> conv_nhwc;
  lp_dwconv_nhwc_fn<E> dwconv_nhwc;
};

// The table for the running CPU (honours MNV4_CPU_LP_ISA; an unavailable request gives the best).
template <class E>
const LpUKernels<E>& lp_ukernels();
// A specific table, or nullptr when it is not compiled in, the CPU lacks it or (amx) Linux refused the tile
// state. why (optional): set to the reason when nullptr is returned.
template <class E>
const LpUKernels<E>* lp_ukernels_for(LpIsa isa, const char** why = nullptr);

// AMX availability on this CPU and OS: true after a successful arch_prctl(ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA) (requested once per process); else false with *why set.
bool amx_bf16_usable(const char** why);

// ---- per-table entry points (XNNPACK-style names: type, op, register tile, ISA) ----
void bf16_conv_nhwc__scalar(int64_t, int64_t, int64_t, int, const int64_t*, const bf16_t*, int64_t, const bf16_t*,
                            int64_t, bf16_t*, int64_t, const float*, Act, const bf16_t*, int64_t);
void bf16_dwconv_nhwc__scalar(int64_t, int, int, const bf16_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                              const float*, int64_t, const float*, Act, bf16_t*, int64_t, int64_t, int64_t, int64_t);
void f16_conv_nhwc__scalar(int64_t, int64_t, int64_t, int, const int64_t*, const f16_t*, int64_t, const f16_t*,
                           int64_t, f16_t*, int64_t, const float*, Act, const f16_t*, int64_t);
void f16_dwconv_nhwc__scalar(int64_t, int, int, const f16_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                             const float*, int64_t, const float*, Act, f16_t*, int64_t, int64_t, int64_t, int64_t);
void bf16_conv_nhwc_32x32__amx_emu_portable(int64_t, int64_t, int64_t, int, const int64_t*, const bf16_t*, int64_t,
                                            const bf16_t*, int64_t, bf16_t*, int64_t, const float*, Act,
                                            const bf16_t*, int64_t);
#if defined(__x86_64__) || defined(_M_X64)
void bf16_conv_nhwc_7x32__avx512f(int64_t, int64_t, int64_t, int, const int64_t*, const bf16_t*, int64_t,
                                  const bf16_t*, int64_t, bf16_t*, int64_t, const float*, Act, const bf16_t*, int64_t);
void bf16_dwconv_nhwc__avx512f(int64_t, int, int, const bf16_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                               const float*, int64_t, const float*, Act, bf16_t*, int64_t, int64_t, int64_t, int64_t);
void bf16_conv_nhwc_7x32__avx512bf16(int64_t, int64_t, int64_t, int, const int64_t*, const bf16_t*, int64_t,
                                     const bf16_t*, int64_t, bf16_t*, int64_t, const float*, Act, const bf16_t*,
                                     int64_t);
void bf16_dwconv_nhwc__avx512bf16(int64_t, int, int, const bf16_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                  const float*, int64_t, const float*, Act, bf16_t*, int64_t, int64_t, int64_t,
                                  int64_t);
void bf16_conv_nhwc_32x32__amx(int64_t, int64_t, int64_t, int, const int64_t*, const bf16_t*, int64_t, const bf16_t*,
                               int64_t, bf16_t*, int64_t, const float*, Act, const bf16_t*, int64_t);
void bf16_conv_nhwc_32x32__amx_emu(int64_t, int64_t, int64_t, int, const int64_t*, const bf16_t*, int64_t,
                                   const bf16_t*, int64_t, bf16_t*, int64_t, const float*, Act, const bf16_t*,
                                   int64_t);
#endif
#if defined(__aarch64__)
void bf16_conv_nhwc_6x16__neon(int64_t, int64_t, int64_t, int, const int64_t*, const bf16_t*, int64_t,
                               const bf16_t*, int64_t, bf16_t*, int64_t, const float*, Act, const bf16_t*, int64_t);
void bf16_dwconv_nhwc__neon(int64_t, int, int, const bf16_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                            const float*, int64_t, const float*, Act, bf16_t*, int64_t, int64_t, int64_t, int64_t);
void bf16_conv_nhwc_6x16__neonbf16(int64_t, int64_t, int64_t, int, const int64_t*, const bf16_t*, int64_t,
                                   const bf16_t*, int64_t, bf16_t*, int64_t, const float*, Act, const bf16_t*,
                                   int64_t);
void bf16_dwconv_nhwc__neonbf16(int64_t, int, int, const bf16_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                const float*, int64_t, const float*, Act, bf16_t*, int64_t, int64_t, int64_t,
                                int64_t);
void f16_conv_nhwc_4x16__neonfp16arith(int64_t, int64_t, int64_t, int, const int64_t*, const f16_t*, int64_t,
                                       const f16_t*, int64_t, f16_t*, int64_t, const float*, Act, const f16_t*,
                                       int64_t);
void f16_dwconv_nhwc__neonfp16arith(int64_t, int, int, const f16_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                    const float*, int64_t, const float*, Act, f16_t*, int64_t, int64_t, int64_t,
                                    int64_t);
#endif

}  // namespace cpu
}  // namespace mnv4
