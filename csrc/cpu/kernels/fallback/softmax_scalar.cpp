// Scalar exp2 and column softmax: the oracle for the SIMD versions (tests/test_softmax.cc) and the kernels
// used with MNV4_CPU_ISA=scalar. std::exp2 and plain loops. Contracts: interface/softmax.h.
#include <cmath>
#include <cstdint>

#include "../interface/softmax.h"

namespace mnv4 {
namespace cpu {

// The contract's flush: 2^x for x < -125.5 (-inf included) is exactly 0, as in the SIMD kernels.
static inline float exp2_flush(float x) { return x < -125.5f ? 0.f : std::exp2(x); }

void f32_exp2__scalar(int64_t n, const float* x, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = exp2_flush(x[i]);
}

void f32_softmax_cols__scalar(int64_t M, int64_t N, float* S, int64_t lds, float* sum) {
  for (int64_t n = 0; n < N; ++n) {
    float mx = S[n];
    for (int64_t m = 1; m < M; ++m) mx = std::fmax(mx, S[m * lds + n]);
    float acc = 0.f;
    for (int64_t m = 0; m < M; ++m) {
      const float e = exp2_flush(S[m * lds + n] - mx);
      S[m * lds + n] = e;
      acc += e;
    }
    sum[n] = acc;
  }
}

}  // namespace cpu
}  // namespace mnv4
