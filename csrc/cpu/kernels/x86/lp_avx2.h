// Reduced-precision traits (the L of common/bf16_impl.h) over AVX2+FMA for bf16, convert-on-load (x86 CPUs
// without AVX-512): Bf16Avx2Cvt, V = Avx2Vec (8 fp32 lanes). bf16 -> fp32 is a 16-bit shift; fp32 -> bf16 rounds
// to nearest even in integer lanes (NaN kept and quieted), as Bf16Avx512Cvt; b_load unpacks W pairs of a kpair
// row (even element: shift left 16; odd: mask the high half). Include only inside a target region with avx2 and
// fma and inside the including file's own namespace, after Avx2Vec (x86/vec_avx2.h).
#ifndef MNV4_LP_AVX2_H_IN_THIS_NAMESPACE
#define MNV4_LP_AVX2_H_IN_THIS_NAMESPACE

struct Bf16Avx2Cvt {
  using V = Avx2Vec;
  using E = bf16_t;
  static inline __m256 widen(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static inline __m256 load(const E* p) { return widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static inline __m256 loadn(const E* p, int n) {
    if (n >= 8) return load(p);
    alignas(16) uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < n; ++i) t[i] = p[i].bits;
    return widen(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
  }
  static inline __m128i narrow(__m256 v) {
    const __m256i x = _mm256_castps_si256(v);
    const __m256i hi = _mm256_srli_epi32(x, 16);
    const __m256i bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(hi, _mm256_set1_epi32(1)));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(x, bias), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), nan);
    // every lane is in [0, 0xffff]: the unsigned-saturating pack is exact
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  }
  static inline void store(E* p, __m256 v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), narrow(v)); }
  static inline void storen(E* p, __m256 v, int n) {
    if (n >= 8) return store(p, v);
    alignas(16) uint16_t t[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(t), narrow(v));
    for (int i = 0; i < n; ++i) p[i].bits = t[i];
  }
  struct BP {
    __m256 e, o;
  };
  static inline BP b_load(const E* p) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(b, 16)),
            _mm256_castsi256_ps(_mm256_and_si256(b, _mm256_set1_epi32(int(0xffff0000u))))};
  }
};

#endif  // MNV4_LP_AVX2_H_IN_THIS_NAMESPACE
