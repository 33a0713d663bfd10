// Reduced-precision traits (the L of common/bf16_impl.h) over NEON, V = NeonVec (4 fp32 lanes):
//   Bf16NeonCvt: base ARMv8 NEON. bf16 -> fp32 a 16-bit shift; fp32 -> bf16 nearest even in integer lanes (NaN
//     kept, quieted); the kpair product two FMLAs after unpacking each pair (even: shift left 16; odd: mask).
//   Bf16NeonDot (MNV4_LP_NEON_BF16, +bf16): BFDOT (vbfdotq_f32) for the kpair product, BFCVTN for the rounding.
//   F16Neon (MNV4_LP_NEON_FP16): fp16 <-> fp32 by FCVTL / FCVTN (base ARMv8).
// Include only inside the including file's own namespace and target region, after NeonVec (vec_neon.h,
// included outside it under the base target, so any out-of-line copy of its members is neon.cpp's).
#ifndef MNV4_LP_NEON_H_IN_THIS_NAMESPACE
#define MNV4_LP_NEON_H_IN_THIS_NAMESPACE

struct Bf16NeonBase {
  using V = NeonVec;
  using E = bf16_t;
  static inline float32x4_t widen(uint16x4_t h) { return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); }
  static inline float32x4_t load(const E* p) { return widen(vld1_u16(&p->bits)); }
  static inline float32x4_t loadn(const E* p, int n) {
    if (n >= 4) return load(p);
    uint16_t t[4] = {0, 0, 0, 0};
    for (int i = 0; i < n; ++i) t[i] = p[i].bits;
    return widen(vld1_u16(t));
  }
};

#if defined(MNV4_LP_NEON_CVT)
struct Bf16NeonCvt : Bf16NeonBase {
  static inline uint16x4_t narrow(float32x4_t v) {
    const uint32x4_t x = vreinterpretq_u32_f32(v), hi = vshrq_n_u32(x, 16);
    const uint32x4_t bias = vaddq_u32(vdupq_n_u32(0x7fff), vandq_u32(hi, vdupq_n_u32(1)));
    const uint32x4_t r = vshrq_n_u32(vaddq_u32(x, bias), 16);
    const uint32x4_t nan = vmvnq_u32(vceqq_f32(v, v));
    return vmovn_u32(vbslq_u32(nan, vorrq_u32(hi, vdupq_n_u32(0x40)), r));
  }
  static inline void store(E* p, float32x4_t v) { vst1_u16(&p->bits, narrow(v)); }
  static inline void storen(E* p, float32x4_t v, int n) {
    if (n >= 4) return store(p, v);
    uint16_t t[4];
    vst1_u16(t, narrow(v));
    for (int i = 0; i < n; ++i) p[i].bits = t[i];
  }
  struct AP {
    float32x4_t e, o;
  };
  struct BP {
    float32x4_t e, o;
  };
  static inline AP a_pair(uint32_t u) {
    return {vreinterpretq_f32_u32(vdupq_n_u32(u << 16)), vreinterpretq_f32_u32(vdupq_n_u32(u & 0xffff0000u))};
  }
  static inline BP b_load(const E* p) {
    const uint32x4_t b = vreinterpretq_u32_u16(vld1q_u16(&p->bits));
    return {vreinterpretq_f32_u32(vshlq_n_u32(b, 16)), vreinterpretq_f32_u32(vandq_u32(b, vdupq_n_u32(0xffff0000u)))};
  }
  static inline float32x4_t dot(float32x4_t acc, const AP& a, const BP& b) {
    return vfmaq_f32(vfmaq_f32(acc, a.e, b.e), a.o, b.o);
  }
};
#endif

#if defined(MNV4_LP_NEON_BF16)
struct Bf16NeonDot : Bf16NeonBase {
  static inline uint16x4_t narrow(float32x4_t v) { return vreinterpret_u16_bf16(vcvt_bf16_f32(v)); }
  static inline void store(E* p, float32x4_t v) { vst1_u16(&p->bits, narrow(v)); }
  static inline void storen(E* p, float32x4_t v, int n) {
    if (n >= 4) return store(p, v);
    uint16_t t[4];
    vst1_u16(t, narrow(v));
    for (int i = 0; i < n; ++i) p[i].bits = t[i];
  }
  using AP = bfloat16x8_t;
  using BP = bfloat16x8_t;
  static inline AP a_pair(uint32_t u) { return vreinterpretq_bf16_u32(vdupq_n_u32(u)); }
  static inline BP b_load(const E* p) { return vreinterpretq_bf16_u16(vld1q_u16(&p->bits)); }
  static inline float32x4_t dot(float32x4_t acc, AP a, BP b) { return vbfdotq_f32(acc, a, b); }
};
#endif

#if defined(MNV4_LP_NEON_FP16)
struct F16Neon {
  using V = NeonVec;
  using E = f16_t;
  static inline float32x4_t load(const E* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(&p->bits))); }
  static inline float32x4_t loadn(const E* p, int n) {
    if (n >= 4) return load(p);
    uint16_t t[4] = {0, 0, 0, 0};
    for (int i = 0; i < n; ++i) t[i] = p[i].bits;
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(t)));
  }
  static inline uint16x4_t narrow(float32x4_t v) { return vreinterpret_u16_f16(vcvt_f16_f32(v)); }
  static inline void store(E* p, float32x4_t v) { vst1_u16(&p->bits, narrow(v)); }
  static inline void storen(E* p, float32x4_t v, int n) {
    if (n >= 4) return store(p, v);
    uint16_t t[4];
    vst1_u16(t, narrow(v));
    for (int i = 0; i < n; ++i) p[i].bits = t[i];
  }
};
#endif

#endif  // MNV4_LP_NEON_H_IN_THIS_NAMESPACE
