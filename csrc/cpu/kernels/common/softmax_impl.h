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
// exp2(x): clamp x to [-127, 128] (keeps the integer conversion in range; NaN passes through the clamps),
// split x = i + f with i = round(x), f in [-1/2, 1/2], and 2^x = 2^i * 2^f with 2^f = e^(f ln2) from its
// Taylor series to degree 7 (truncation < 5.2e-9 relative on |f ln2| <= 0.347, below the fp32 rounding of
// the Horner steps). 2^f is in [0.707, 1.415], so adding i to its exponent is exact for x in [-125.5, 128)
// (x in (127.5, 128) still gives the finite 2^x); results below 2^-125.5 (x < -125.5, -inf included) are
// set to exactly 0 instead of a denormal.

// Taylor coefficients of 2^f = sum_k (ln 2)^k / k! f^k.
constexpr float kExp2C1 = 0.693147180559945309f;    // ln2
constexpr float kExp2C2 = 0.240226506959100712f;    // ln2^2 / 2
constexpr float kExp2C3 = 0.0555041086648215800f;   // ln2^3 / 6
constexpr float kExp2C4 = 0.00961812910762847717f;  // ln2^4 / 24
constexpr float kExp2C5 = 0.00133335581464284434f;  // ln2^5 / 120
constexpr float kExp2C6 = 1.54035303933816099e-4f;  // ln2^6 / 720
constexpr float kExp2C7 = 1.52527338040598403e-5f;  // ln2^7 / 5040

inline typename VX::T exp2_vec(typename VX::T x) {
  using T = typename VX::T;
  x = VX::max(VX::set1(-127.f), x);
  x = VX::min(VX::set1(128.f), x);
  const T i = VX::round(x);
  const T f = VX::sub(x, i);
  T p = VX::set1(kExp2C7);
  p = VX::fma(p, f, VX::set1(kExp2C6));
  p = VX::fma(p, f, VX::set1(kExp2C5));
  p = VX::fma(p, f, VX::set1(kExp2C4));
  p = VX::fma(p, f, VX::set1(kExp2C3));
  p = VX::fma(p, f, VX::set1(kExp2C2));
  p = VX::fma(p, f, VX::set1(kExp2C1));
  p = VX::fma(p, f, VX::set1(1.f));
  return VX::zero_below(VX::ldexp(p, i), x, -125.5f);
}

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
