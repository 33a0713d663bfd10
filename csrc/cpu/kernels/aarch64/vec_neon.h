// 4-lane fp32 vector traits over NEON q registers: the `V` every template in ../common/ is written against
// (simd_impl.h: GEMM, dwconv; softmax_impl.h: exp2, column softmax). aarch64 only.
#pragma once

#include <arm_neon.h>

namespace mnv4 {
namespace cpu {

struct NeonVec {
  using T = float32x4_t;
  static constexpr int W = 4;
  static constexpr int kRegs = 32;  // vector registers (register-blocking budgets)
  static inline T zero() { return vdupq_n_f32(0.f); }
  static inline T set1(float f) { return vdupq_n_f32(f); }
  static inline T loadu(const float* p) { return vld1q_f32(p); }
  static inline void storeu(float* p, T v) { vst1q_f32(p, v); }
  static inline T loadn(const float* p, int n) {
    if (n >= W) return vld1q_f32(p);
    float t[4] = {0.f, 0.f, 0.f, 0.f};
    for (int i = 0; i < n; ++i) t[i] = p[i];
    return vld1q_f32(t);
  }  using Mask = int;  // no masked loads: loadm is loadn
  static inline Mask tail_mask(int n) { return n; }
  static inline T loadm(const float* p, Mask m) { return loadn(p, m); }

  static inline void storen(float* p, T v, int n) {
    if (n >= W) return vst1q_f32(p, v);
    float t[4];
    vst1q_f32(t, v);
    for (int i = 0; i < n; ++i) p[i] = t[i];
  }
  static inline T add(T a, T b) { return vaddq_f32(a, b); }
  static inline T sub(T a, T b) { return vsubq_f32(a, b); }
  static inline T mul(T a, T b) { return vmulq_f32(a, b); }
  static inline T div(T a, T b) { return vdivq_f32(a, b); }
  static inline T abs(T a) { return vabsq_f32(a); }
  static inline T select_neg(T x, T a, T b) {  // a where x's sign bit is set
    return vbslq_f32(vcltq_s32(vreinterpretq_s32_f32(x), vdupq_n_s32(0)), a, b);
  }
  static inline T fma(T a, T b, T c) { return vfmaq_f32(c, a, b); }
  static inline T max(T a, T b) { return vmaxq_f32(a, b); }  // NaN when either is NaN
  static inline T min(T a, T b) { return vminq_f32(a, b); }
  static inline T round(T a) { return vrndnq_f32(a); }
  static inline T ldexp(T p, T i) {  // p * 2^i for integral i (added to the exponent field)
    const int32x4_t e = vshlq_n_s32(vcvtq_s32_f32(i), 23);
    return vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(p), e));
  }
  static inline T zero_below(T r, T x, float t) {  // r where x >= t, else 0 (vcltq is false for NaN)
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(r), vcltq_f32(x, vdupq_n_f32(t))));
  }
  static inline void deinterleave2(const float* p, T& even, T& odd) {  // 8 floats -> even / odd lanes
    const float32x4x2_t v = vld2q_f32(p);
    even = v.val[0];
    odd = v.val[1];
  }
};

}  // namespace cpu
}  // namespace mnv4
