// Reduced-precision traits (the L of common/bf16_impl.h) over AVX-512: for bf16 in two forms, and for fp16:
//   Bf16Avx512Cvt: AVX-512F/BW/VL only. bf16 -> fp32 is a 16-bit shift; fp32 -> bf16 rounds to nearest even
//     in integer lanes (NaN kept and quieted); the kpair product is two fp32 FMAs after unpacking each pair
//     (even element: shift left 16; odd: mask the high half), exact like the products of vdpbf16ps.
//   Bf16Avx512Dp: AVX512-BF16. vdpbf16ps for the kpair product (denormal inputs read as zero, denormal
//     results flushed, one rounding per product added), vcvtneps2bf16 for the rounding.
// Include only inside a target region with avx512f, avx512bw, avx512vl (and avx512bf16 for Bf16Avx512Dp), and
// inside the including file's own namespace (after Avx512Vec: x86/vec_avx512.h, included outside it under
// avx512.cpp's exact target, so any out-of-line copy of its members is the one that file has).
#ifndef MNV4_LP_AVX512_H_IN_THIS_NAMESPACE
#define MNV4_LP_AVX512_H_IN_THIS_NAMESPACE

struct Bf16Avx512Base {
  using V = Avx512Vec;
  using E = bf16_t;
  static inline __m512 widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static inline __m512 load(const E* p) { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static inline __m512 loadn(const E* p, int n) {
    if (n >= 16) return load(p);
    return widen(_mm256_maskz_loadu_epi16(V::mask(n), p));
  }
};

struct Bf16Avx512Cvt : Bf16Avx512Base {
  static inline __m256i narrow(__m512 v) {
    const __m512i x = _mm512_castps_si512(v);
    const __m512i hi = _mm512_srli_epi32(x, 16);
    const __m512i bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(hi, _mm512_set1_epi32(1)));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(x, bias), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
  }
  static inline void store(E* p, __m512 v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow(v)); }
  static inline void storen(E* p, __m512 v, int n) {
    if (n >= 16) return store(p, v);
    _mm256_mask_storeu_epi16(p, V::mask(n), narrow(v));
  }
  struct AP {
    __m512 e, o;
  };
  struct BP {
    __m512 e, o;
  };
  static inline AP a_pair(uint32_t u) {
    float e, o;
    const uint32_t ue = u << 16, uo = u & 0xffff0000u;
    std::memcpy(&e, &ue, 4);
    std::memcpy(&o, &uo, 4);
    return {_mm512_set1_ps(e), _mm512_set1_ps(o)};
  }
  static inline BP b_load(const E* p) {
    const __m512i b = _mm512_loadu_si512(p);
    return {_mm512_castsi512_ps(_mm512_slli_epi32(b, 16)),
            _mm512_castsi512_ps(_mm512_and_si512(b, _mm512_set1_epi32(int(0xffff0000u))))};
  }
  static inline __m512 dot(__m512 acc, const AP& a, const BP& b) {
    return _mm512_fmadd_ps(a.o, b.o, _mm512_fmadd_ps(a.e, b.e, acc));
  }
};

#if defined(MNV4_LP_AVX512_DP)
struct Bf16Avx512Dp : Bf16Avx512Base {
  static inline __m256i narrow(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }
  static inline void store(E* p, __m512 v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow(v)); }
  static inline void storen(E* p, __m512 v, int n) {
    if (n >= 16) return store(p, v);
    _mm256_mask_storeu_epi16(p, V::mask(n), narrow(v));
  }
  // 32 values, lo the first 16: vcvtne2ps2bf16 rounds each as vcvtneps2bf16 does
  static inline void store2(E* p, __m512 lo, __m512 hi) { _mm512_storeu_si512(p, (__m512i)_mm512_cvtne2ps_pbh(hi, lo)); }
  using AP = __m512i;
  using BP = __m512i;
  static inline AP a_pair(uint32_t u) { return _mm512_set1_epi32(int(u)); }
  // (p[0], p[1]) / (p[1], 0) in every pair (bf16_impl.h's lp_a_at / lp_a_hi): a broadcast load (and a shift),
  // no round trip through a general register
  static inline AP a_at(const E* p) { return _mm512_broadcastd_epi32(_mm_loadu_si32(p)); }
  static inline AP a_hi(const E* p) { return _mm512_srli_epi32(a_at(p), 16); }
  static inline BP b_load(const E* p) { return _mm512_loadu_si512(p); }
  static inline __m512 dot(__m512 acc, AP a, BP b) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b); }
};
#endif

#if defined(MNV4_LP_AVX512_FP16)
struct F16Avx512 {
  using V = Avx512Vec;
  using E = f16_t;
  static inline __m512 load(const E* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static inline __m512 loadn(const E* p, int n) {
    if (n >= 16) return load(p);
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(V::mask(n), p));
  }
  static inline __m256i narrow(__m512 v) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline void store(E* p, __m512 v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow(v)); }
  static inline void storen(E* p, __m512 v, int n) {
    if (n >= 16) return store(p, v);
    _mm256_mask_storeu_epi16(p, V::mask(n), narrow(v));
  }
};

struct Fp16Avx512H {
  using T = __m512h;
  static inline T zero() { return _mm512_setzero_ph(); }
  static inline T load(const f16_t* p) { return _mm512_castsi512_ph(_mm512_loadu_si512(p)); }
  static inline T bcast(const f16_t* p) {
    _Float16 x;
    std::memcpy(&x, p, 2);
    return _mm512_set1_ph(x);
  }
  static inline T fma(T a, T b, T c) { return _mm512_fmadd_ph(a, b, c); }
  static inline __m512 lo(T h) { return _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_castph_si512(h))); }
  static inline __m512 hi(T h) { return _mm512_cvtph_ps(_mm512_extracti64x4_epi64(_mm512_castph_si512(h), 1)); }
};
#endif

#endif  // MNV4_LP_AVX512_H_IN_THIS_NAMESPACE
