// Torch-free fp32 microkernels for the attention part of the fused Mobile MQA op (csrc/cpu/mqa.cpp): a
// vectorised exp2 and a column softmax. Same structure as ukernels.h: a scalar fallback (the oracle,
// fallback/softmax_scalar.cpp), AVX2+FMA (x86/softmax_avx2.cpp) and NEON (aarch64/softmax_neon.cpp) built from
// one template (common/softmax_impl.h). The table follows the GEMM table: `softmax_ukernels()` returns the
// kernels of the ISA that `ukernels()` uses, so MNV4_CPU_ISA switches both. The exp2 kernels are the
// softmax's building block, tested on their own (tests/test_softmax.cc) through the tables.
//
// Why columns: the MQA kernel's fp32 path keeps the attention logits transposed, S^T[m][n] (m = key pixel,
// n = query pixel, n contiguous), because that is what the row-major GEMM microkernel produces from K^T x Q
// and what it consumes as its B matrix for O = V x P^T. The softmax then runs over m for every column n: vectorised
// along n, three passes over the rows (column max; exp2 + column sum), all in L1 for a query tile.
#pragma once

#include <cstdint>

#include "ukernels.h"

namespace mnv4 {
namespace cpu {

// y[i] = 2^x[i] for i < n (y == x allowed). Relative error <= 2^-21 for x in [-125.5, 128); x < -125.5
// (-inf included) gives exactly 0 (2^x < 1.7e-38: no denormals), x >= 128 gives +inf, NaN gives NaN.
using f32_exp2_fn = void (*)(int64_t n, const float* x, float* y);

// Unnormalised column softmax in base 2, in place: for every column n < N of the M x N row-major S
// (leading dimension lds >= N, unit stride along n), with mx = max_{m < M} S[m][n]:
//   S[m][n] = 2^(S[m][n] - mx)   and   sum[n] = sum_{m < M} S[m][n]   (summed in increasing m).
// Entries of -inf give 0 (a column needs one finite entry). A NaN entry gives a NaN sum[n] (mx itself may
// or may not be NaN), so the caller's normalised column is all NaN, as torch.softmax's. M >= 1, N >= 0. Writes S[m][n] for m < M,
// n < N and sum[n] for n < N, nothing else. (Callers fold ln->log2 conversion, log2(e), into the logits.)
using f32_softmax_cols_fn = void (*)(int64_t M, int64_t N, float* S, int64_t lds, float* sum);

struct SoftmaxUKernels {
  Isa isa;
  const char* name;  // the kernels' ISA: "scalar", "avx2_fma" (also in the avx512 table), "neon"
  f32_softmax_cols_fn softmax_cols;
  f32_exp2_fn exp2;  // the softmax's exp2, for callers whose rows are the softmax's axis (mqa.cpp's bf16 path)
};

// The table of the ISA that ukernels() uses now.
const SoftmaxUKernels& softmax_ukernels();
// A specific table, or nullptr if not compiled in / not supported by this CPU.
const SoftmaxUKernels* softmax_ukernels_for(Isa isa);

void f32_exp2__scalar(int64_t, const float*, float*);
void f32_softmax_cols__scalar(int64_t, int64_t, float*, int64_t, float*);
#if defined(__x86_64__) || defined(_M_X64)
void f32_exp2__avx2_fma(int64_t, const float*, float*);
void f32_softmax_cols__avx2_fma(int64_t, int64_t, float*, int64_t, float*);
#endif
#if defined(__aarch64__)
void f32_exp2__neon(int64_t, const float*, float*);
void f32_softmax_cols__neon(int64_t, int64_t, float*, int64_t, float*);
#endif

}  // namespace cpu
}  // namespace mnv4
