// exp2 and the column softmax (interface/softmax.h), written once over a vector-traits type VX and
// instantiated per ISA (x86/softmax_avx2.cpp, aarch64/softmax_neon.cpp). Include only from an ISA file, inside
// its target region and its own namespace (nothing here may be COMDAT-merged between ISAs).
//
// VX provides: T, W, set1, zero, loadu, storeu, loadn(p, n) (first n lanes, rest 0), storen(p, v, n),
// add, sub, mul, fma(a, b, c) = a*b + c, max(a, b) / min(a, b) (returning b when b is NaN), round (to nearest
// integer, ties to even), ldexp(p, i) (p * 2^i for a positive normal p and an integer-valued i, by adding i to
// p's exponent field: exact while the result is a normal float; exponent 255 with p's mantissa 0 = +inf),
// zero_below(r, x, t) (0 where x < t; r elsewhere and where x is NaN).
//
// NaN: exp2's range clamps are max(-127, x), min(128, x), which keep a NaN x; the column max may drop a NaN
// (max(mx, NaN) gives NaN, a later max(NaN, y) y), but that entry's own exp2 is NaN, so the column's sum is.
//
// exp2(x): exp2_v in vec_math.h.

#include "vec_math.h"

inline typename VX::T exp2_vec(typename VX::T x) { return exp2_v<VX>(x); }

inline void exp2_impl(int64_t n, const float* x, float* y) {
  constexpr int W = VX::W;
  int64_t i = 0;
  for (; i + W <= n; i += W) VX::storeu(y + i, exp2_vec(VX::loadu(x + i)));
  if (i < n) {
    const int r = static_cast<int>(n - i);
    VX::storen(y + i, exp2_vec(VX::loadn(x + i, r)), r);
  }
}

// Columns [0, NV*W) of s (or the first `rem` of them when TAIL; then NV == 1).
template <int NV, bool TAIL>
inline void softmax_cols_block(int64_t M, float* s, int64_t lds, float* sum, int rem) {
  using T = typename VX::T;
  constexpr int W = VX::W;
  T mx[NV], sm[NV];
  for (int v = 0; v < NV; ++v) mx[v] = TAIL ? VX::loadn(s + v * W, rem) : VX::loadu(s + v * W);
  for (int64_t m = 1; m < M; ++m) {
    const float* r = s + m * lds;
    for (int v = 0; v < NV; ++v) mx[v] = VX::max(mx[v], TAIL ? VX::loadn(r + v * W, rem) : VX::loadu(r + v * W));
  }
  for (int v = 0; v < NV; ++v) sm[v] = VX::zero();
  for (int64_t m = 0; m < M; ++m) {
    float* r = s + m * lds;
    for (int v = 0; v < NV; ++v) {
      const T e = exp2_vec(VX::sub(TAIL ? VX::loadn(r + v * W, rem) : VX::loadu(r + v * W), mx[v]));
      sm[v] = VX::add(sm[v], e);
      if (TAIL)
        VX::storen(r + v * W, e, rem);
      else
        VX::storeu(r + v * W, e);
    }
  }
  for (int v = 0; v < NV; ++v) {
    if (TAIL)
      VX::storen(sum + v * W, sm[v], rem);
    else
      VX::storeu(sum + v * W, sm[v]);
  }
}

inline void softmax_cols_impl(int64_t M, int64_t N, float* S, int64_t lds, float* sum) {
  constexpr int W = VX::W;
  if (M <= 0 || N <= 0) return;
  int64_t j = 0;
  // 4 vectors of columns at a time: 4 independent max / sum chains per row, rows stream from L1.
  for (; j + 4 * W <= N; j += 4 * W) softmax_cols_block<4, false>(M, S + j, lds, sum + j, 4 * W);
  for (; j + W <= N; j += W) softmax_cols_block<1, false>(M, S + j, lds, sum + j, W);
  if (j < N) softmax_cols_block<1, true>(M, S + j, lds, sum + j, static_cast<int>(N - j));
}
