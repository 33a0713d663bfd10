// fp32 "vectors" of one lane: the V of common/bf16_impl.h and vec_math.h for the portable (emulation) tables,
// so their epilogues (and gelu_v) are the SIMD tables' code paths, one lane wide (fallback/amx_emu.cpp,
// fallback/f16_fma_emu.cpp); and ScalarLp<E>, the matching L (element E <-> fp32 by ukernels_bf16.h's
// conversions). Include it inside the including file's own namespace, after ukernels_bf16.h.
#ifndef MNV4_SCALAR_VEC_H_IN_THIS_NAMESPACE
#define MNV4_SCALAR_VEC_H_IN_THIS_NAMESPACE

struct ScalarVec {
  using T = float;
  static constexpr int W = 1;
  static T zero() { return 0.f; }
  static T set1(float f) { return f; }
  static T loadu(const float* p) { return *p; }
  static T loadn(const float* p, int n) { return n > 0 ? *p : 0.f; }
  static void storeu(float* p, T v) { *p = v; }
  static T add(T a, T b) { return a + b; }
  static T sub(T a, T b) { return a - b; }
  static T mul(T a, T b) { return a * b; }
  static T div(T a, T b) { return a / b; }
  static T abs(T a) { return std::fabs(a); }
  static T select_neg(T x, T a, T b) { return std::signbit(x) ? a : b; }
  static T fma(T a, T b, T c) { return std::fma(a, b, c); }
  static T max(T a, T b) { return a > b ? a : b; }  // b when either is NaN, as x86 maxps
  static T min(T a, T b) { return a < b ? a : b; }
  static T round(T a) { return std::nearbyint(a); }
  static T ldexp(T p, T i) { return std::ldexp(p, int(i)); }
  static T zero_below(T r, T x, float t) { return x >= t ? r : 0.f; }
};

template <class Elem>
struct ScalarLp {
  using V = ScalarVec;
  using E = Elem;
  static float load(const E* p) { return to_f32(*p); }
  static float loadn(const E* p, int n) { return n > 0 ? to_f32(*p) : 0.f; }
  static void store(E* p, float v) { *p = from_f32<E>(v); }
  static void storen(E* p, float v, int n) {
    if (n > 0) *p = from_f32<E>(v);
  }
};

#endif  // MNV4_SCALAR_VEC_H_IN_THIS_NAMESPACE
