// Scalar reference microkernels: the oracle every SIMD kernel is tested against (csrc/cpu/kernels/tests/),
// and the kernels used on CPUs without AVX2/NEON or with MNV4_CPU_ISA=scalar. Written for obviousness:
// direct loops with explicit bounds checks, no scratch, no tiling. Contracts: interface/ukernels.h.
#include <cmath>

#include "../interface/ukernels.h"

namespace mnv4 {
namespace cpu {

float gelu_exact(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752440f)); }

float act_scalar(float v, Act act) {
  if (act == Act::Relu) return v < 0.f ? 0.f : v;  // NaN stays NaN (torch.relu); `v > 0 ? v : 0` would give 0
  if (act == Act::Gelu) return gelu_exact(v);
  return v;
}

void f32_gemm__scalar(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                      float* C, int64_t ldc, const float* bias, Act act, const float* R, int64_t ldr) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      float acc = bias ? bias[m] : 0.f;
      for (int64_t k = 0; k < K; ++k) acc += A[m * lda + k] * B[k * ldb + n];
      float y = act_scalar(acc, act);
      if (R) y += R[m * ldr + n];
      C[m * ldc + n] = y;
    }
  }
}

void f32_dwconv__scalar(int64_t channels, int k, int s, const float* in, int64_t in_cs, int64_t in_rs, int64_t in_r0,
                        int64_t in_h, int64_t in_w, const float* w, const float* bias, Act act, float* out,
                        int64_t out_cs, int64_t out_rs, int64_t oy0, int64_t oy1, float* /*scratch*/) {
  const int p = k / 2;
  const int64_t out_w = (in_w - 1) / s + 1;
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t oy = oy0; oy < oy1; ++oy) {
      for (int64_t ox = 0; ox < out_w; ++ox) {
        float acc = bias ? bias[c] : 0.f;
        for (int i = 0; i < k; ++i) {
          const int64_t y = oy * s + i - p;
          if (y < 0 || y >= in_h) continue;
          for (int j = 0; j < k; ++j) {
            const int64_t x = ox * s + j - p;
            if (x < 0 || x >= in_w) continue;
            acc += w[(c * k + i) * k + j] * in[c * in_cs + (y - in_r0) * in_rs + x];
          }
        }
        out[c * out_cs + (oy - oy0) * out_rs + ox] = act_scalar(acc, act);
      }
    }
  }
}

void x32_transpose__scalar(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd) {
  constexpr int64_t B = 32;  // cache blocking only
  for (int64_t r0 = 0; r0 < rows; r0 += B)
    for (int64_t c0 = 0; c0 < cols; c0 += B)
      for (int64_t c = c0; c < cols && c < c0 + B; ++c)
        for (int64_t r = r0; r < rows && r < r0 + B; ++r) dst[c * ldd + r] = src[r * lds + c];
}

void f32_pwconv_nhwc__scalar(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                             int64_t ldb, int64_t bss, float* C, int64_t ldc, const float* bias, Act act,
                             const float* R, int64_t ldr) {  // NR = 1: B(k, n) = B[n * bss + k * ldb]
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      float acc = bias ? bias[n] : 0.f;
      for (int64_t k = 0; k < K; ++k) acc += A[m * lda + k] * B[n * bss + k * ldb];
      float y = act_scalar(acc, act);
      if (R) y += R[m * ldr + n];
      C[m * ldc + n] = y;
    }
  }
}

void f32_conv_nhwc__scalar(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* A, int64_t lda,
                           const float* B, int64_t ldb, int64_t bss, float* C, int64_t ldc, const float* bias, Act act,
                           const float* R, int64_t ldr) {  // NR = 1: B(k, n) = B[n * bss + k * ldb]
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      float acc = bias ? bias[n] : 0.f;
      for (int t = 0; t < T; ++t)
        for (int64_t k = 0; k < K; ++k) acc += A[m * lda + off[t] + k] * B[n * bss + (t * K + k) * ldb];
      float y = act_scalar(acc, act);
      if (R) y += R[m * ldr + n];
      C[m * ldc + n] = y;
    }
  }
}

void f32_dwconv_nhwc__scalar(int64_t channels, int k, int s, const float* in, int64_t in_ps, int64_t in_rs,
                             int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias,
                             Act act, float* out, int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
  const int p = k / 2;
  const int64_t out_w = (in_w - 1) / s + 1;
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    for (int64_t ox = 0; ox < out_w; ++ox) {
      for (int64_t c = 0; c < channels; ++c) {
        float acc = bias ? bias[c] : 0.f;
        for (int i = 0; i < k; ++i) {
          const int64_t y = oy * s + i - p;
          if (y < 0 || y >= in_h) continue;
          for (int j = 0; j < k; ++j) {
            const int64_t x = ox * s + j - p;
            if (x < 0 || x >= in_w) continue;
            acc += w[(i * k + j) * ldw + c] * in[(y - in_r0) * in_rs + x * in_ps + c];
          }
        }
        out[(oy - oy0) * out_rs + ox * out_ps + c] = act_scalar(acc, act);
      }
    }
  }
}

}  // namespace cpu
}  // namespace mnv4
