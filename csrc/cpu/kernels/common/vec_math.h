// Vector math over a vector-traits type (x86/vec_avx2.h, aarch64/vec_neon.h), shared by the kernel
// templates (simd_impl.h: the GELU epilogue; softmax_impl.h: exp2). Like them, include only from an ISA
// file, inside its target region and its own namespace (nothing here may be COMDAT-merged between ISAs).
#ifndef MNV4_VEC_MATH_H_IN_THIS_NAMESPACE
#define MNV4_VEC_MATH_H_IN_THIS_NAMESPACE

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

template <class VX>
inline typename VX::T exp2_v(typename VX::T x) {
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


// GELU (exact form x/2 (1 + erf(x/sqrt2))) with erf from Abramowitz & Stegun 7.1.26: for z = |x|/sqrt2,
// erfc(z) = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-z^2), t = 1 / (1 + p z), absolute error <= 1.5e-7
// on erf. Then 1 + erf(x/sqrt2) = erfc(z) for x < 0 and 2 - erfc(z) otherwise, so the result's absolute
// error is <= 0.75e-7 |x|: ~1e-7 relative where it matters (the scalar fallback keeps std::erf as oracle).
template <class VX>
inline typename VX::T gelu_v(typename VX::T x) {
  using T = typename VX::T;
  const T z = VX::mul(VX::abs(x), VX::set1(0.70710678118654752f));
  const T t = VX::div(VX::set1(1.f), VX::fma(z, VX::set1(0.3275911f), VX::set1(1.f)));
  T p = VX::set1(1.061405429f);
  p = VX::fma(p, t, VX::set1(-1.453152027f));
  p = VX::fma(p, t, VX::set1(1.421413741f));
  p = VX::fma(p, t, VX::set1(-0.284496736f));
  p = VX::fma(p, t, VX::set1(0.254829592f));
  p = VX::mul(p, t);
  const T e = exp2_v<VX>(VX::mul(VX::mul(z, z), VX::set1(-1.44269504088896341f)));  // exp(-z^2)
  const T q = VX::mul(p, e);                                                         // erfc(z)
  const T one_plus_erf = VX::select_neg(x, q, VX::sub(VX::set1(2.f), q));
  return VX::mul(VX::mul(x, VX::set1(0.5f)), one_plus_erf);
}

// The activation epilogue of every kernel, NaN-propagating as torch.relu / gelu: VX::max returns its second
// operand when either is NaN (maxps; NEON's fmax gives NaN either way), so relu is max(0, v), never max(v, 0);
// gelu_v propagates NaN.
template <class VX, Act A>
inline typename VX::T act_v(typename VX::T v) {
  if (A == Act::Relu) return VX::max(VX::zero(), v);
  if (A == Act::Gelu) return gelu_v<VX>(v);
  return v;
}

#endif  // MNV4_VEC_MATH_H_IN_THIS_NAMESPACE
