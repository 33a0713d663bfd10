// Torch-free fp32 microkernels for the fused MobileNetV4 blocks (raw pointers, no torch headers).
//
// Two layouts. Channel-major ("weights as the A matrix"; the mqa op): activations are [C][pixels] tiles with
// the pixels of a channel contiguous. A 1x1 convolution is then a plain row-major GEMM with the torch weight
// [Cout, Cin] as A (no packing):
//     C[m][n] = act(sum_k A[m][k] * B[k][n] + bias[m]) + R[m][n]
// and a depthwise convolution runs plane by plane, vectorised along the width. Pixel-major (NHWC; the uib,
// conv and pointwise ops): see the NHWC kernels below.
//
// Every kernel exists as a scalar fallback (fallback/, the oracle), AVX2+FMA and AVX-512F (x86/, run-time
// detected) and NEON (aarch64/, only on aarch64 builds). `ukernels()` returns the table for the running CPU;
// `ukernels_for(isa)` a specific one (nullptr when it is not compiled in or the CPU lacks it). A table may
// hold another ISA's kernel where it has none of its own (UKernels::isa_of says which).
// The environment variable MNV4_CPU_ISA=scalar|avx2|avx512|neon (read once) forces a table; unset/auto =
// best (avx512 where the CPU has AVX-512F, else avx2_fma on x86-64, neon on aarch64).
#pragma once

#include <cstddef>
#include <cstdint>

#include "codes.h"

namespace mnv4 {
namespace cpu {

using Act = ::mnv4::Activation;  // the epilogue's activation (codes.h); Gelu is the exact (erf) form

// NaN semantics (every kernel, every table): those of the plain-torch composite. NaN propagates through every
// sum and activation (relu(NaN) = gelu(NaN) = NaN, as torch.relu / gelu), and in the depthwise convs a tap
// outside the image contributes nothing, as in torch's conv2d: it is skipped, not multiplied by a zero pad,
// so a NaN or infinite weight on it does not reach that output. (conv_nhwc knows no image: it sums every tap
// it is given; a caller that pads must do the same for non-finite weights, as csrc/cpu/conv.cpp does.)
// Infinities may give other results than torch's where the order of the additions differs; NaN may not.

enum class Isa : int { Scalar = 0, Avx2Fma = 1, Neon = 2, Avx512 = 3 };

// A GEMM kernel's register tile: mr rows x nr columns of C. The ISA files instantiate their kernels with
// these constants (nr / lanes vectors), and the registry exports them (UKernels::gemm_tile, conv_nhwc_tile),
// so schedules, cost models and packed weight layouts read the tile of the kernel that runs. For the NHWC
// GEMM, nr is also the slab width of a packed B (a wrong one gives wrong results, not only slow ones).
struct Tile {
  int mr, nr;
};
constexpr Tile kScalarTile{1, 1};           // the scalar kernels (B slabs of one column)
constexpr Tile kGemmAvx2Tile{6, 16};        // f32_gemm_6x16__avx2_fma
constexpr Tile kConvNhwcAvx2Tile{6, 16};    // f32_conv_nhwc_6x16__avx2_fma
constexpr Tile kGemmAvx512Tile{8, 32};      // f32_gemm_8x32__avx512
constexpr Tile kConvNhwcAvx512Tile{7, 32};  // f32_conv_nhwc_7x32__avx512
constexpr Tile kGemmNeonTile{6, 16};        // f32_gemm_6x16__neon
constexpr Tile kConvNhwcNeonTile{6, 16};    // f32_conv_nhwc_6x16__neon

// The channel-major depthwise kernels' scratch (f32_dwconv_fn): per group of kDwGroup channels, the needed
// input rows zero-padded and, for s = 2, split into stride phases (common/simd_impl.h builds them there).
// One phase of a padded row: the vector loop reads columns < round_up(out_w, lanes) + (k - 1)/s, lanes | 8.
constexpr int kDwGroup = 8;
constexpr int64_t dw_phase_len(int k, int64_t out_w) { return ((out_w + 7) / 8 * 8 + k + 7) / 8 * 8; }
// kDwGroup channels x rows x (s phases, + for s == 2 an unsplit line of 2 * plen + 16 floats)
constexpr int64_t f32_dwconv_scratch_floats(int k, int s, int64_t in_w, int64_t out_rows) {
  if (out_rows <= 0) return 0;
  const int64_t plen = dw_phase_len(k, (in_w - 1) / s + 1);
  return kDwGroup * ((out_rows - 1) * s + k) * (plen * s + (s == 2 ? 2 * plen + 16 : 0));
}

// GEMM: C[m*ldc + n] = act(sum_k A[m*lda + k] * B[k*ldb + n] + bias[m]) + R[m*ldr + n]
//   for m < M, n < N. A row-major (lda >= K), B row-major (ldb >= N), C row-major (ldc >= N); unit stride
//   along n in B, C and R. bias: M floats (one per output row) or nullptr (= 0). R: nullptr (no residual)
//   or an M x N matrix with leading dimension ldr, added AFTER the activation (the block's skip add).
//   C must not alias A, B or bias; C == R (in place residual add) is allowed when ldr == ldc.
//   M, N, K >= 0; K == 0 gives act(bias) + R. Writes every C[m][n] for m < M, n < N and nothing else.
using f32_gemm_fn = void (*)(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                             int64_t ldb, float* C, int64_t ldc, const float* bias, Act act, const float* R,
                             int64_t ldr);

// Depthwise k x k convolution (k odd), stride s (1 or 2), zero padding k/2, for `channels` planes.
// Input plane c is a logical in_h x in_w image of which rows [in_r0, in_r0 + stored rows) are in memory:
//   logical pixel (y, x) is in[c*in_cs + (y - in_r0)*in_rs + x].
// The kernel computes output rows [oy0, oy1) (out_w = (in_w - 1)/s + 1 columns):
//   out[c*out_cs + (oy - oy0)*out_rs + ox] = act(bias[c] + sum_{i,j} w[c*k*k + i*k + j] * in(oy*s+i-k/2, ox*s+j-k/2))
// with the taps outside [0, in_h) x [0, in_w) skipped (see "NaN semantics"). The caller must store every
// input row of [oy0*s - k/2, (oy1-1)*s + k/2] that lies inside [0, in_h). bias may be nullptr (= 0).
// scratch: at least f32_dwconv_scratch_floats(k, s, in_w, oy1 - oy0) floats (the kernels build zero-padded,
// stride-phase-split copies of the input rows there); the scalar fallback ignores it.
using f32_dwconv_fn = void (*)(int64_t channels, int k, int s, const float* in, int64_t in_cs, int64_t in_rs,
                               int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, const float* bias,
                               Act act, float* out, int64_t out_cs, int64_t out_rs, int64_t oy0, int64_t oy1,
                               float* scratch);

// Transpose: dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols (e.g. NHWC pixels <-> channel-major tile).
using x32_transpose_fn = void (*)(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst,
                                  int64_t ldd);

// ---- NHWC kernels ("pixels as rows"): channels_last activations used in place, weights transposed ----
// A channels_last tensor is [pixels][C] with each pixel's channels contiguous; a 1x1 conv is then a GEMM
// whose rows are pixels and whose B is the weight transposed, [Cin][Cout] (fuse() stores the weights that
// way, so nothing is packed per call), and a depthwise conv is vectorised along the channels (full vectors
// whatever the plane's width).
//
// Pointwise conv (a GEMM with a per-column bias):
//   C[m*ldc + n] = act(sum_k A[m*lda + k] * B(k, n) + bias[n]) + R[m*ldr + n]   for m < M, n < N.
//   A: M pixels x K channels (lda = pixel stride). B in column slabs of NR = the table's conv_nhwc_tile.nr:
//   B(k, n) = B[(n / NR) * bss + k * ldb + n % NR]. A row-major [K][ldb] matrix (ldb >= N) is bss = NR;
//   slabs packed one after the other (each K x NR, zero-padded) are ldb = NR, bss = K * NR. Unit stride
//   along n in C and R.
//   bias: N floats or nullptr; R: nullptr or the residual (after the activation). C must not alias A, B or
//   bias; C == R is allowed when ldr == ldc. K == 0 gives act(bias) + R. Writes C[m][n], m < M, n < N only.
using f32_pwconv_nhwc_fn = void (*)(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                                    int64_t ldb, int64_t bss, float* C, int64_t ldc, const float* bias, Act act,
                                    const float* R, int64_t ldr);

// Dense conv as T shifted pointwise products (an implicit GEMM: no im2col), same B and epilogue contract:
//   C[m*ldc + n] = act(sum_{t<T} sum_{k<K} A[m*lda + off[t] + k] * B(t*K + k, n) + bias[n]) + R[m*ldr + n].
//   For a k x k conv over a zero-padded NHWC row band with Cin channels and padded width Wp, stride s: K = Cin,
//   T = k*k, off[ky*k + kx] = (ky*Wp + kx)*Cin, lda = s*Cin (M output pixels of one row), B = the weight as
//   [ky][kx][Cin][Cout]. T == 1 with off = {0} is f32_pwconv_nhwc_fn.
using f32_conv_nhwc_fn = void (*)(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* A,
                                  int64_t lda, const float* B, int64_t ldb, int64_t bss, float* C, int64_t ldc,
                                  const float* bias, Act act, const float* R, int64_t ldr);

// Depthwise k x k conv (k odd), stride s (1 or 2), zero padding k/2, over `channels` contiguous channels.
//   Input pixel (y, x) of the logical in_h x in_w image, channel c: in[(y - in_r0)*in_rs + x*in_ps + c]
//   (rows [oy0*s - k/2, (oy1-1)*s + k/2] that lie inside [0, in_h) must be stored);
//   weights taps-major: w[(i*k + j)*ldw + c] (torch's [C, 1, k, k] stored as [k][k][C]); bias: C or nullptr.
//   Output rows [oy0, oy1): out[(oy - oy0)*out_rs + ox*out_ps + c] = act(bias[c] + sum_{i,j} w * in(oy*s+i-k/2,
//   ox*s+j-k/2)), out_w = (in_w - 1)/s + 1 columns. No scratch; writes only those elements.
using f32_dwconv_nhwc_fn = void (*)(int64_t channels, int k, int s, const float* in, int64_t in_ps, int64_t in_rs,
                                    int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw,
                                    const float* bias, Act act, float* out, int64_t out_ps, int64_t out_rs,
                                    int64_t oy0, int64_t oy1);

// The instruction set each kernel of a table is written for ("scalar", "avx2_fma", "avx512", "neon").
struct KernelIsas {
  const char *gemm, *dwconv, *transpose, *dwconv_nhwc, *conv_nhwc;
};

struct UKernels {
  Isa isa;
  const char* name;     // "scalar", "avx2_fma", "avx512", "neon"
  KernelIsas isa_of;    // each kernel's own ISA (the avx512 table borrows AVX2 kernels)
  Tile gemm_tile;       // gemm's register tile: output channels x pixels
  Tile conv_nhwc_tile;  // conv_nhwc's register tile: pixels x output channels (nr: B's slab width)
  f32_gemm_fn gemm;
  f32_dwconv_fn dwconv;
  x32_transpose_fn transpose;
  f32_dwconv_nhwc_fn dwconv_nhwc;
  f32_conv_nhwc_fn conv_nhwc;
  // f32_pwconv_nhwc_fn: the conv with one tap at offset 0 (as fast as a separate pointwise entry point)
  void pwconv_nhwc(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                   int64_t bss, float* C, int64_t ldc, const float* bias, Act act, const float* R,
                   int64_t ldr) const {
    static const int64_t zero = 0;
    conv_nhwc(M, N, K, 1, &zero, A, lda, B, ldb, bss, C, ldc, bias, act, R, ldr);
  }
};

// The table for the running CPU (honours MNV4_CPU_ISA; an unavailable request falls back to the best one).
const UKernels& ukernels();
// A specific table, or nullptr if not compiled in / not supported by this CPU.
const UKernels* ukernels_for(Isa isa);
// Scalar gelu (exact): x * 0.5 * (1 + erf(x / sqrt(2))) with std::erf: the oracle. The SIMD epilogues use
// the vectorised form in common/vec_math.h (absolute error <= 0.75e-7 |x|), checked against this one by
// the C++ tests; a per-lane scalar erf would make GELU blocks several times slower.
float gelu_exact(float x);
// The scalar activations (the fallback's epilogue and the oracle): relu(x) = x < 0 ? 0 : x (NaN stays NaN),
// gelu_exact, identity.
float act_scalar(float x, Act act);

// Per-ISA entry points (XNNPACK-style names state the contract; see the typedefs above).
void f32_gemm__scalar(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t,
                      const float*, Act, const float*, int64_t);
void f32_dwconv__scalar(int64_t, int, int, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                        const float*, const float*, Act, float*, int64_t, int64_t, int64_t, int64_t, float*);
void x32_transpose__scalar(int64_t, int64_t, const float*, int64_t, float*, int64_t);
// the pointwise contract directly (the oracle of the C++ tests; the tables run it as a one-tap conv_nhwc)
void f32_pwconv_nhwc__scalar(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, int64_t,
                             float*, int64_t, const float*, Act, const float*, int64_t);
void f32_conv_nhwc__scalar(int64_t, int64_t, int64_t, int, const int64_t*, const float*, int64_t,
                       const float*, int64_t, int64_t, float*, int64_t, const float*, Act, const float*, int64_t);
void f32_dwconv_nhwc__scalar(int64_t, int, int, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                             const float*, int64_t, const float*, Act, float*, int64_t, int64_t, int64_t, int64_t);
#if defined(__x86_64__) || defined(_M_X64)
void f32_gemm_6x16__avx2_fma(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*,
                             int64_t, const float*, Act, const float*, int64_t);
void f32_dwconv__avx2_fma(int64_t, int, int, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                          const float*, const float*, Act, float*, int64_t, int64_t, int64_t, int64_t, float*);
void x32_transpose__avx2(int64_t, int64_t, const float*, int64_t, float*, int64_t);
void f32_gemm_8x32__avx512(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t,
                           const float*, Act, const float*, int64_t);
void f32_conv_nhwc_7x32__avx512(int64_t, int64_t, int64_t, int, const int64_t*, const float*, int64_t,
                       const float*, int64_t, int64_t, float*, int64_t, const float*, Act, const float*, int64_t);
void f32_dwconv_nhwc__avx512(int64_t, int, int, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                             const float*, int64_t, const float*, Act, float*, int64_t, int64_t, int64_t, int64_t);
void f32_conv_nhwc_6x16__avx2_fma(int64_t, int64_t, int64_t, int, const int64_t*, const float*, int64_t,
                       const float*, int64_t, int64_t, float*, int64_t, const float*, Act, const float*, int64_t);
void f32_dwconv_nhwc__avx2_fma(int64_t, int, int, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                               const float*, int64_t, const float*, Act, float*, int64_t, int64_t, int64_t, int64_t);
#endif
#if defined(__aarch64__)
void f32_gemm_6x16__neon(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*,
                         int64_t, const float*, Act, const float*, int64_t);
void f32_dwconv__neon(int64_t, int, int, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                      const float*, const float*, Act, float*, int64_t, int64_t, int64_t, int64_t, float*);
void x32_transpose__neon(int64_t, int64_t, const float*, int64_t, float*, int64_t);
void f32_conv_nhwc_6x16__neon(int64_t, int64_t, int64_t, int, const int64_t*, const float*, int64_t,
                       const float*, int64_t, int64_t, float*, int64_t, const float*, Act, const float*, int64_t);
void f32_dwconv_nhwc__neon(int64_t, int, int, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                               const float*, int64_t, const float*, Act, float*, int64_t, int64_t, int64_t, int64_t);
#endif

}  // namespace cpu
}  // namespace mnv4
