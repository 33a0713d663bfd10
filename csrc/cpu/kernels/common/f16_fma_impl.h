// The fp16-arithmetic GEMM tile over a vector-of-fp16 traits type H: AVX512-FP16's vfmadd231ph natively
// (x86/avx512_fp16.cpp), a portable emulation in every build (fallback/f16_fma_emu.cpp, the tests' way to run
// this code on CPUs without AVX512-FP16). Include it only from an ISA file, inside its namespace and target
// region, after bf16_impl.h (lp_store_row, LpInPlace).
//
// H provides, for vectors of 2 * L::V::W fp16 lanes:
//   using T; zero(); load(const f16_t* p) (2W elements); bcast(const f16_t* p) (p[0] in every lane);
//   fma(a, b, c) (a * b + c per lane, rounded once to fp16, subnormals kept); lo(h) / hi(h): the first / last W
//   lanes widened to fp32 (exact).
//
// Arithmetic (the f16 tables' f16_acc_chunk, ukernels_bf16.h): per output and tap, CHUNK products at a time
// are summed by fp16 fused multiply-adds in k order, from zero; each chunk's sum is widened and added to an fp32
// accumulator that starts at the bias. That is neon_fp16's (aarch64/neon_fp16.cpp: why chunks), so with the
// same CHUNK the two tables agree bit for bit (kernels/tests/test_bf16.cc).
//
// Layout: the k-major slabs of kpair == 1 (ukernels_bf16.h LpPack): row k of a tap's slab is NVS * W fp16
// columns, read NH = ceil(NV / 2) vectors at a time; A's element k of a row is broadcast. Registers for MR x NV:
// MR * NV fp32 + MR * NH fp16 accumulators, NH B vectors (8 x 2 on AVX-512: 16 + 8 + 1 of 32 zmm, the A
// broadcasts as memory operands of the FMAs).
#ifndef MNV4_F16_FMA_IMPL_H_IN_THIS_NAMESPACE
#define MNV4_F16_FMA_IMPL_H_IN_THIS_NAMESPACE

template <class L, class H, int CHUNK>
struct F16FmaTile : LpInPlace<L> {
  template <int MR, int NH>
  static inline void chunk(int kn, const f16_t* at, int64_t lda, const f16_t* bk, int64_t NR,
                           typename H::T (&h)[MR][NH]) {
    constexpr int HW = 2 * L::V::W;
    for (int i = 0; i < MR; ++i)
      for (int q = 0; q < NH; ++q) h[i][q] = H::zero();
    for (int k = 0; k < kn; ++k, bk += NR) {
      typename H::T bv[NH];
      for (int q = 0; q < NH; ++q) bv[q] = H::load(bk + q * HW);
      for (int i = 0; i < MR; ++i) {
        const typename H::T av = H::bcast(at + i * lda + k);
        for (int q = 0; q < NH; ++q) h[i][q] = H::fma(av, bv[q], h[i][q]);
      }
    }
  }

  template <int MR, int NV, int NVS, Act A, bool RES, bool TAIL>
  static inline void tile(int64_t K, int T, const int64_t* off, const f16_t* a, int64_t lda, const f16_t* b, f16_t* c,
                          int64_t ldc, const float* bias, const f16_t* r, int64_t ldr, int nrem, int64_t /*i0*/,
                          const void* /*pf*/, int64_t /*pf_lines*/) {
    using V = typename L::V;
    constexpr int W = V::W, NH = (NV + 1) / 2;
    constexpr int64_t NR = int64_t(NVS) * W;
    typename V::T acc[MR][NV];
    for (int v = 0; v < NV; ++v) {
      const typename V::T b0 = bias ? (TAIL ? V::loadn(bias + v * W, nrem - v * W) : V::loadu(bias + v * W))
                                    : V::zero();
      for (int i = 0; i < MR; ++i) acc[i][v] = b0;
    }
    for (int t = 0; t < T; ++t) {
      const f16_t* at = a + off[t];
      const f16_t* bt = b + t * K * NR;
      for (int64_t k0 = 0; k0 < K; k0 += CHUNK) {
        typename H::T h[MR][NH];
        if (K - k0 >= CHUNK)  // the constant trip count unrolls
          chunk<MR, NH>(CHUNK, at + k0, lda, bt + k0 * NR, NR, h);
        else
          chunk<MR, NH>(int(K - k0), at + k0, lda, bt + k0 * NR, NR, h);
        for (int i = 0; i < MR; ++i)
          for (int q = 0; q < NH; ++q) {
            acc[i][2 * q] = V::add(acc[i][2 * q], H::lo(h[i][q]));
            if (2 * q + 1 < NV) acc[i][2 * q + 1] = V::add(acc[i][2 * q + 1], H::hi(h[i][q]));
          }
      }
    }
    for (int i = 0; i < MR; ++i)
      lp_store_row<L, NV, A, RES, TAIL>(acc[i], c + i * ldc, RES ? r + i * ldr : nullptr, nrem);
  }
};

#endif  // MNV4_F16_FMA_IMPL_H_IN_THIS_NAMESPACE
