// The reduced-precision SIMD kernels (interface/ukernels_bf16.h), written once over a traits type L and
// instantiated per ISA (x86/avx512_bf16.cpp, aarch64/neon_bf16.cpp). Include it only from an ISA file, after
// every standard header, inside that file's target region and its own namespace, after vec_math.h (nothing
// here may be COMDAT-merged between ISAs).
//
// L provides:
//   using V: the fp32 vector traits of common/simd_impl.h (T, W, zero, set1, loadu, loadn, add, max, fma, ...)
//   using E: the storage type (bf16_t or f16_t)
//   load(const E* p) -> V::T (W elements to fp32), loadn(p, n) (first n lanes, rest 0; n may be >= W),
//   store(E* p, V::T) and storen(p, v, n) (round to E, nearest even; NaN stays NaN).
// GEMM tiles (see lp_conv_impl) are a class K_ with
//   template <int MR, int NV, int NVS, Act A, bool RES, bool TAIL> static void tile(...): MR rows x NV fp32
//   vectors of columns of a slab that is NVS vectors wide. PairTile<L> below is the tile of the "kpair"
//   layouts; L then also provides AP a_pair(uint32_t) (two consecutive A elements, broadcast), BP b_load(
//   const E*) (W pairs: the two k rows of W columns) and V::T dot(V::T acc, AP, BP) (acc += a0*b0 + a1*b1 per
//   lane: vdpbf16ps / BFDOT, or two FMAs after a convert).

#ifndef MNV4_BF16_IMPL_H_IN_THIS_NAMESPACE
#define MNV4_BF16_IMPL_H_IN_THIS_NAMESPACE

#include "dw_rows_impl.h"

// One output row of a tile: fp32 acc (NV vectors) -> act -> + residual (E, widened) -> rounded to E.
// TAIL: only the first nrem columns are read from the residual and stored.
template <class L, int NV, Act A, bool RES, bool TAIL>
inline void lp_store_row(const typename L::V::T* acc, typename L::E* c, const typename L::E* r, int nrem) {
  using V = typename L::V;
  constexpr int W = V::W;
  for (int v = 0; v < NV; ++v) {
    const int n = TAIL ? nrem - v * W : W;
    if (TAIL && n <= 0) break;
    typename V::T y = act_v<V, A>(acc[v]);
    if (RES) y = V::add(y, TAIL ? L::loadn(r + v * W, n) : L::load(r + v * W));
    if (TAIL && n < W)
      L::storen(c + v * W, y, n);
    else
      L::store(c + v * W, y);
  }
}

template <class E>
inline uint32_t lp_load_pair(const E* p) {  // p[0] | p[1] << 16 (little endian), unaligned
  uint32_t u;
  std::memcpy(&u, p, 4);
  return u;
}

// The "kpair" tile: slab row (t*Kp + k/2) holds NVS*W pairs (B(2q, n), B(2q+1, n)); A's two elements k, k+1
// of a row are broadcast as one 32-bit pair. An odd K's last pair is (A[K-1], 0) against the packing's zero.
// Operands of a row block / slab as a tile reads them (lp_conv_impl): the tiles that read E in place take the
// block's rows and the packed slab as they are.
template <class L>
struct LpInPlace {
  struct ABlock {
    const typename L::E* a;
    int64_t lda;
    const int64_t* off;
  };
  static inline ABlock a_block(int64_t, int64_t, int, const int64_t* off, const typename L::E* a, int64_t lda) {
    return {a, lda, off};
  }
  template <int NR>
  static inline const typename L::E* b_slab(int64_t, int, const typename L::E* b, bool) { return b; }
};

// The pair (p[0], p[1]) broadcast, and (p[1], 0): an odd K's last element, read without touching p[2] (the
// next pixel's first element, maybe past the end of A; a NaN or infinity there must not meet the packing's
// zero). L::a_at / a_hi where the traits have a vector form, else through a scalar.
template <class L, class = void>
struct LpVectorPairs : std::false_type {};
template <class L>
struct LpVectorPairs<L, std::void_t<decltype(void(L::a_at(nullptr))), decltype(void(L::a_hi(nullptr)))>>
    : std::true_type {};
template <class L>
inline typename L::AP lp_a_at(const typename L::E* p) {
  if constexpr (LpVectorPairs<L>::value)
    return L::a_at(p);
  else
    return L::a_pair(lp_load_pair(p));
}
template <class L>
inline typename L::AP lp_a_hi(const typename L::E* p) {
  if constexpr (LpVectorPairs<L>::value)
    return L::a_hi(p);
  else
    return L::a_pair(lp_load_pair(p) >> 16);
}

// FIX (void, or a shape known at compile time: simd_impl.h's StemShape): K, T and lda are FIX's (the
// arguments are ignored) and every A pair the tile reads is at a constant displacement from its tap's base
// a + off[t] plus 2q: no row pointers.
template <class L>
struct PairTile : LpInPlace<L> {
  template <int MR, int NV, int NVS, Act A, bool RES, bool TAIL, class FIX = void>
  static inline void tile(int64_t K, int T, const int64_t* off, const typename L::E* a, int64_t lda,
                          const typename L::E* b, typename L::E* c, int64_t ldc, const float* bias,
                          const typename L::E* r, int64_t ldr, int nrem, int64_t /*i0*/, const void* pf,
                          int64_t pf_lines) {
    using V = typename L::V;
    using E = typename L::E;
    constexpr int W = V::W;
    constexpr int64_t ROW = 2 * NVS * W;  // elements per pair row of the slab
    const int64_t Kp = (K + 1) / 2, Ke = K & ~int64_t(1);
    typename V::T acc[MR][NV];
    for (int v = 0; v < NV; ++v) {
      const typename V::T b0 =
          bias ? (TAIL ? V::loadn(bias + v * W, nrem - v * W) : V::loadu(bias + v * W)) : V::zero();
      for (int i = 0; i < MR; ++i) acc[i][v] = b0;
    }
    if constexpr (!std::is_void<FIX>::value) {
      constexpr int KF = FIX::K, LF = FIX::lda, KPF = (KF + 1) / 2;
#pragma GCC unroll 1
      for (int t = 0; t < FIX::T; ++t) {
        const E* at = a + off[t];
        const E* bt = b + t * KPF * ROW;
        auto step = [&](int q, auto tail) {  // pair q; tail: an odd K's last, (A[K-1], 0)
          typename L::BP bv[NV];
          for (int v = 0; v < NV; ++v) bv[v] = L::b_load(bt + q * ROW + v * 2 * W);
          // Pixel i's pair q + 3 is pixel i + 1's pair q (lda = 3 pairs): hidden from GCC, whose predictive
          // commoning otherwise carries the pairs between steps in general registers (spilled, then broadcast
          // from there) instead of broadcasting each from memory.
          const E* aq = at + (decltype(tail)::value ? KF - 2 : 2 * q);
          asm("" : "+r"(aq));
#pragma GCC unroll 16
          for (int i = 0; i < MR; ++i) {
            const typename L::AP av = decltype(tail)::value ? lp_a_hi<L>(aq + i * LF) : lp_a_at<L>(aq + i * LF);
            for (int v = 0; v < NV; ++v) acc[i][v] = L::dot(acc[i][v], av, bv[v]);
          }
        };
#pragma GCC unroll 1  // unrolled, GCC hoisted the broadcasts and spilled accumulators
        for (int q = 0; q < KF / 2; ++q) step(q, std::false_type{});
        if constexpr (KF & 1) step(KPF - 1, std::true_type{});
      }
      (void)Kp, (void)Ke, (void)lda, (void)pf, (void)pf_lines;
    } else {
    // pf_lines 64-byte lines from pf (the next slab, see lp_slab) towards L2, spread evenly over the tile's T*Kp
    // pair steps, issued per block of LP_KB steps outside the k loop (as the fp32 tile, simd_impl.h pw_tile)
    constexpr int64_t LP_KB = 4;
    const int64_t steps = int64_t(T) * Kp;
    int64_t done = 0, issued = 0;
    auto prefetch_due = [&](int64_t n) {
      done += n;
      for (const int64_t due = pf_lines * done / steps; issued < due; ++issued)
        __builtin_prefetch(static_cast<const char*>(pf) + issued * 64, 0, 2);
    };
    for (int t = 0; t < T; ++t) {
      const E* at = a + off[t];
      const E* bt = b + t * Kp * ROW;
      for (int64_t k0 = 0; k0 < Ke; k0 += 2 * LP_KB) {
        const int64_t k1 = std::min(Ke, k0 + 2 * LP_KB);
        if (pf_lines > 0) prefetch_due((k1 - k0) / 2);
        for (int64_t k = k0; k < k1; k += 2) {
          typename L::BP bv[NV];
          const E* bk = bt + (k / 2) * ROW;
          for (int v = 0; v < NV; ++v) bv[v] = L::b_load(bk + v * 2 * W);
          for (int i = 0; i < MR; ++i) {
            const typename L::AP av = L::a_pair(lp_load_pair(at + i * lda + k));
            for (int v = 0; v < NV; ++v) acc[i][v] = L::dot(acc[i][v], av, bv[v]);
          }
        }
      }
      if (K & 1) {
        if (pf_lines > 0) prefetch_due(1);
        typename L::BP bv[NV];
        const E* bk = bt + (Kp - 1) * ROW;
        for (int v = 0; v < NV; ++v) bv[v] = L::b_load(bk + v * 2 * W);
        for (int i = 0; i < MR; ++i) {
          const typename L::AP av = L::a_pair(uint32_t(at[i * lda + K - 1].bits));
          for (int v = 0; v < NV; ++v) acc[i][v] = L::dot(acc[i][v], av, bv[v]);
        }
      }
    }
    }
    for (int i = 0; i < MR; ++i) lp_store_row<L, NV, A, RES, TAIL>(acc[i], c + i * ldc, RES ? r + i * ldr : nullptr, nrem);
  }
};

// The convert-on-load conv's operands and tile (tables without bf16 products: x86/avx512_bf16cvt.cpp,
// x86/avx2_bf16cvt.cpp). Per row block, the block's A rows of every tap are widened to fp32 once (a_block). Per
// slab, the block's first row tile unpacks the packed kpair rows in registers (a shift and a mask per vector),
// multiplies with them and stores them widened, k-major rows of NR floats (the fp32 kernel's slab layout), into
// a per-thread buffer (b_slab names it); the slab's other row tiles read that buffer. Their k loop is then the
// fp32 kernel's: NV vector loads of B, MR broadcasts of A (memory operands of the FMAs), MR x NV FMAs, no
// conversion. The first tile widens rather than a separate pass, whose loads, shifts and stores would not
// overlap FMAs: it matters where a slab has few row tiles (7x7 planes, the fused blocks' row bands).
template <class L>
struct F32Tile {
  struct ABlock {
    const float* a;
    int64_t lda;
    const int64_t* off;
  };
  // tap t's row i at buf + (t*mb + i)*ld, ld = K rounded up to 16 floats plus 16: rows a multiple of 1 KB
  // apart would share L1 sets (K = 512: every other row of a tile in the same set)
  static inline ABlock a_block(int64_t mb, int64_t K, int T, const int64_t* off, const typename L::E* a,
                               int64_t lda) {
    using V = typename L::V;
    constexpr int W = V::W;
    static thread_local std::vector<float> buf;
    static thread_local std::vector<int64_t> toff;
    const int64_t ld = (K + 15) / 16 * 16 + 16;
    if (buf.size() < size_t(T * mb * ld)) buf.resize(size_t(T * mb * ld));
    if (toff.size() < size_t(T)) toff.resize(size_t(T));
    for (int t = 0; t < T; ++t) {
      toff[t] = t * mb * ld;
      for (int64_t i = 0; i < mb; ++i) {  // elements < K of each row only
        const typename L::E* src = a + i * lda + off[t];
        float* dst = buf.data() + toff[t] + i * ld;
        int64_t k = 0;
        for (; k + W <= K; k += W) V::storeu(dst + k, L::load(src + k));
        if (k < K) V::storen(dst + k, L::loadn(src + k, int(K - k)), int(K - k));
      }
    }
    return {buf.data(), ld, toff.data()};
  }
  // the packed slab the next first row tile widens (into `dst`), or nullptr once it has
  struct Pending {
    const typename L::E* src = nullptr;
    float* dst = nullptr;
  };
  static inline Pending& pending() {
    static thread_local Pending p;
    return p;
  }
  // slab b's widened buffer: row t*K + k of NR floats, filled by the slab's first row tile when other row tiles
  // follow (reuse); a slab of one row tile is only unpacked in registers
  template <int NR>
  static inline const float* b_slab(int64_t K, int T, const typename L::E* b, bool reuse) {
    static thread_local std::vector<float> buf;
    if (reuse && buf.size() < size_t(T * K * NR)) buf.resize(size_t(T * K * NR));
    pending() = {b, reuse ? buf.data() : nullptr};
    return buf.data();
  }

  // acc += the T*K products of a tile's rows with the packed kpair slab src, unpacked in registers; STORE: the
  // unpacked rows also go to dst (row t*K + k of NVS*W floats). Even k, then odd k, each from its own load of
  // the pair row: NV live B vectors, as in the fp32 tile (AVX2's 6 x 16 tile has no registers to spare).
  // Tiles of fewer than 4 rows would wait on the FMA latency (MR x NV chains): odd k go to chains of their own.
  template <bool STORE, int MR, int NV, int NVS>
  static inline void unpack_tile(typename L::V::T (&acc)[MR][NV], int64_t K, int T, const int64_t* off,
                                 const float* a, int64_t lda, const typename L::E* src, float* dst) {
    using V = typename L::V;
    constexpr int W = V::W;
    constexpr int64_t ROW = NVS * W;
    constexpr bool SPLIT = MR < 4;
    const int64_t Kp = (K + 1) / 2;
    typename V::T acc_o[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) acc_o[i][v] = V::zero();
    for (int t = 0; t < T; ++t) {
      const float* at = a + off[t];
      const typename L::E* bt = src + t * Kp * 2 * ROW;
      float* dt = STORE ? dst + t * K * ROW : nullptr;
      for (int64_t q = 0; q < Kp; ++q) {
        const int64_t k = 2 * q;
        typename V::T bv[NV];
        for (int v = 0; v < NV; ++v) {
          bv[v] = L::b_load(bt + q * 2 * ROW + v * 2 * W).e;
          if (STORE) V::storeu(dt + k * ROW + v * W, bv[v]);
        }
        for (int i = 0; i < MR; ++i) {
          const typename V::T av = V::set1(at[i * lda + k]);
          for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(av, bv[v], acc[i][v]);
        }
        if (k + 1 == K) break;  // an odd K's last pair: (B(K-1, n), 0)
        for (int v = 0; v < NV; ++v) {
          bv[v] = L::b_load(bt + q * 2 * ROW + v * 2 * W).o;
          if (STORE) V::storeu(dt + (k + 1) * ROW + v * W, bv[v]);
        }
        for (int i = 0; i < MR; ++i) {
          const typename V::T av = V::set1(at[i * lda + k + 1]);
          for (int v = 0; v < NV; ++v) {
            if (SPLIT)
              acc_o[i][v] = V::fma(av, bv[v], acc_o[i][v]);
            else
              acc[i][v] = V::fma(av, bv[v], acc[i][v]);
          }
        }
      }
    }
    if (SPLIT)
      for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v) acc[i][v] = V::add(acc[i][v], acc_o[i][v]);
  }

  template <int MR, int NV, int NVS, Act A, bool RES, bool TAIL>
  static inline void tile(int64_t K, int T, const int64_t* off, const float* a, int64_t lda, const float* b,
                          typename L::E* c, int64_t ldc, const float* bias, const typename L::E* r, int64_t ldr,
                          int nrem, int64_t, const void*, int64_t) {  // next-slab prefetch not measured here
    using V = typename L::V;
    constexpr int W = V::W;
    constexpr int64_t ROW = NVS * W;
    typename V::T acc[MR][NV];
    for (int v = 0; v < NV; ++v) {
      const typename V::T b0 =
          bias ? (TAIL ? V::loadn(bias + v * W, nrem - v * W) : V::loadu(bias + v * W)) : V::zero();
      for (int i = 0; i < MR; ++i) acc[i][v] = b0;
    }
    Pending& pw = pending();
    if (pw.src) {  // the slab's first tile: unpack the pair rows, use them (and store them for the others)
      if (pw.dst)
        unpack_tile<true, MR, NV, NVS>(acc, K, T, off, a, lda, pw.src, pw.dst);
      else
        unpack_tile<false, MR, NV, NVS>(acc, K, T, off, a, lda, pw.src, nullptr);
      pw.src = nullptr;
    } else {
      for (int t = 0; t < T; ++t) {
        const float* at = a + off[t];
        const float* bt = b + t * K * ROW;
        for (int64_t k = 0; k < K; ++k) {
          typename V::T bv[NV];
          for (int v = 0; v < NV; ++v) bv[v] = V::loadu(bt + k * ROW + v * W);
          for (int i = 0; i < MR; ++i) {
            const typename V::T av = V::set1(at[i * lda + k]);
            for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(av, bv[v], acc[i][v]);
          }
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      lp_store_row<L, NV, A, RES, TAIL>(acc[i], c + i * ldc, RES ? r + i * ldr : nullptr, nrem);
  }
};

// All M rows of one slab: full row tiles, then one tile of the M % MR last rows.
// AE, BE: the operand types the tile reads (E, or fp32 for F32Tile).
// FIX: void, or the compile-time shape a tile that takes one (PairTile) runs.
template <class K_, int MR, int NV, int NVS, Act A, bool RES, bool TAIL, class FIX, class... Args>
inline void lp_tile(Args... args) {
  if constexpr (std::is_void<FIX>::value)
    K_::template tile<MR, NV, NVS, A, RES, TAIL>(args...);
  else
    K_::template tile<MR, NV, NVS, A, RES, TAIL, FIX>(args...);
}

// pf: the next packed slab (or nullptr), pf_lines 64-byte lines of it, shared out evenly among the row tiles
// (tile t: lines [pf_lines * t / tiles, pf_lines * (t + 1) / tiles)); nothing with fewer than two full row
// tiles (M < 2 * MR: see simd_impl.h pw_impl). The small planes' slabs otherwise arrive from L3 or DRAM on
// demand, one tile at a time (benches/results/ab-builds-bf16-prefetch-*.json).
template <class L, class K_, int MR, int NV, int NVS, Act A, bool RES, bool TAIL, class FIX, class AE, class BE>
inline void lp_slab(int64_t M, int64_t K, int T, const int64_t* off, const AE* a, int64_t lda, const BE* b,
                    typename L::E* c, int64_t ldc, const float* bias, const typename L::E* r,
                    int64_t ldr, int nrem, const typename L::E* pf, int64_t pf_lines) {
  const int64_t tiles = (M + MR - 1) / MR;
  if (!pf || M < 2 * MR) pf_lines = 0;
  const char* pfc = reinterpret_cast<const char*>(pf);
  auto share = [&](int64_t t) { return pf_lines * t / tiles; };  // tile t's lines: [share(t), share(t + 1))
  int64_t i = 0;
  for (; i + MR <= M; i += MR)
    lp_tile<K_, MR, NV, NVS, A, RES, TAIL, FIX>(K, T, off, a + i * lda, lda, b, c + i * ldc, ldc, bias,
                                                RES ? r + i * ldr : nullptr, ldr, nrem, i,
                                                pfc + share(i / MR) * 64, share(i / MR + 1) - share(i / MR));
  if (i == M) return;
  const char* rem_pf = pfc + share(i / MR) * 64;
  const int64_t rem_lines = share(i / MR + 1) - share(i / MR);
  const int64_t i0 = i;
  a += i * lda;
  c += i * ldc;
  if (RES) r += i * ldr;
  switch (static_cast<int>(M - i)) {
#define MNV4_LP_ROWS(R)                                                                                     \
  case R:                                                                                                   \
    if (R < MR)                                                                                             \
      lp_tile<K_, (R < MR ? R : 1), NV, NVS, A, RES, TAIL, FIX>(K, T, off, a, lda, b, c, ldc, bias, r, ldr,  \
                                                                nrem, i0, rem_pf, rem_lines);                 \
    break;
    MNV4_LP_ROWS(1) MNV4_LP_ROWS(2) MNV4_LP_ROWS(3) MNV4_LP_ROWS(4) MNV4_LP_ROWS(5) MNV4_LP_ROWS(6)
    MNV4_LP_ROWS(7) MNV4_LP_ROWS(8) MNV4_LP_ROWS(9) MNV4_LP_ROWS(10) MNV4_LP_ROWS(11) MNV4_LP_ROWS(12)
    MNV4_LP_ROWS(13)
#undef MNV4_LP_ROWS
    default: break;
  }
}

// The conv (lp_conv_nhwc_fn): rows in blocks of 32 register tiles (their A rows stay in L2 while every slab
// passes over them), slabs inside (a slab, T*K x NR, stays in L1 over the block's row tiles), as the fp32
// kernel. A last slab of at most W columns runs a one-vector tile. K_::a_block / b_slab give the operands as
// the tile reads them: in place (LpInPlace), or widened to fp32 (F32Tile).
template <class L, class K_, int MR, int NV, Act A, bool RES, class FIX = void>
void lp_conv_impl(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const typename L::E* a, int64_t lda,
                  const typename L::E* b, int64_t bss, typename L::E* c, int64_t ldc, const float* bias,
                  const typename L::E* r, int64_t ldr) {
  constexpr int W = L::V::W, NR = NV * W;
  constexpr int64_t MB = 32 * MR;
  if (M <= 0 || N <= 0) return;
  // the next slab's prefetch (lp_slab): a kpair slab's lines (T*Kp pair rows of NR pairs; bss may be larger:
  // see lp_conv_nhwc_fn)
  const int64_t pf_lines =
      (std::min(bss, int64_t(T) * ((K + 1) / 2) * 2 * NR) * int64_t(sizeof(typename L::E)) + 63) / 64;
  for (int64_t m0 = 0; m0 < M; m0 += MB) {
    const int64_t mb = M - m0 < MB + MB / 2 ? M - m0 : MB;  // no short last block
    const auto ab = K_::a_block(mb, K, T, off, a + m0 * lda, lda);
    typename L::E* cm = c + m0 * ldc;
    const typename L::E* rm = RES ? r + m0 * ldr : nullptr;
    int64_t j = 0;
    const typename L::E* bj = b;
    for (; j + NR <= N; j += NR, bj += bss)
      lp_slab<L, K_, MR, NV, NV, A, RES, false, FIX>(mb, K, T, ab.off, ab.a, ab.lda, K_::template b_slab<NR>(K, T, bj, mb > MR),
                                                cm + j, ldc, bias ? bias + j : nullptr, RES ? rm + j : nullptr, ldr,
                                                NR, j + NR < N ? bj + bss : nullptr, pf_lines);
    if (j < N) {
      const int rem = static_cast<int>(N - j);
      const auto bw = K_::template b_slab<NR>(K, T, bj, mb > MR);
      if (rem <= W)
        lp_slab<L, K_, MR, 1, NV, A, RES, true, FIX>(mb, K, T, ab.off, ab.a, ab.lda, bw, cm + j, ldc,
                                                bias ? bias + j : nullptr, RES ? rm + j : nullptr, ldr, rem,
                                                nullptr, 0);
      else
        lp_slab<L, K_, MR, NV, NV, A, RES, true, FIX>(mb, K, T, ab.off, ab.a, ab.lda, bw, cm + j, ldc,
                                                 bias ? bias + j : nullptr, RES ? rm + j : nullptr, ldr, rem,
                                                 nullptr, 0);
    }
    if (mb != MB) break;
  }
}

template <class L, class K_, int MR, int NV, class FIX = void>
void lp_conv_act(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const typename L::E* a, int64_t lda,
                 const typename L::E* b, int64_t bss, typename L::E* c, int64_t ldc, const float* bias, Act act,
                 const typename L::E* r, int64_t ldr) {
#define MNV4_LP_CONV(ACT)                                                                                         \
  return r ? lp_conv_impl<L, K_, MR, NV, ACT, true, FIX>(M, N, K, T, off, a, lda, b, bss, c, ldc, bias, r, ldr) \
           : lp_conv_impl<L, K_, MR, NV, ACT, false, FIX>(M, N, K, T, off, a, lda, b, bss, c, ldc, bias, r, ldr)
  switch (act) {
    case Act::None: MNV4_LP_CONV(Act::None);
    case Act::Relu: MNV4_LP_CONV(Act::Relu);
    case Act::Gelu: MNV4_LP_CONV(Act::Gelu);
  }
#undef MNV4_LP_CONV
}

// The stems' conv (3 input channels, 3x3, stride 2: T = 3 taps of K = 9, lda = 6; see simd_impl.h's
// StemShape) on the kpair tile: the tallest tile the registers hold (MR x NV accumulators, NV B vectors, one A
// pair: 14 x 2 zmm on AVX-512) with the shape compiled in. Its 5 pairs per tap end in (A[8], 0).
struct LpStemShape {
  static constexpr int K = 9, T = 3, lda = 6;
};
template <class L, class K_, int MR, int NV>
void lp_conv_dispatch(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const typename L::E* a,
                      int64_t lda, const typename L::E* b, int64_t bss, typename L::E* c, int64_t ldc,
                      const float* bias, Act act, const typename L::E* r, int64_t ldr) {
  if constexpr (std::is_same<K_, PairTile<L>>::value) {
    using S = LpStemShape;
    constexpr int fit = (L::V::kRegs - NV - 1) / NV, SMR = fit > 14 ? 14 : fit < MR ? MR : fit;
    if (K == S::K && T == S::T && lda == S::lda)
      return lp_conv_act<L, K_, SMR, NV, S>(M, N, K, T, off, a, lda, b, bss, c, ldc, bias, act, r, ldr);
  }
  lp_conv_act<L, K_, MR, NV>(M, N, K, T, off, a, lda, b, bss, c, ldc, bias, act, r, ldr);
}

// ---- depthwise (lp_dwconv_nhwc_fn) ----
// Stride 1 with k = 3, or k = 5 on rows of at most DW_ROW, on a table with 32 vector registers:
// dw_rows_impl.h's row segments (lp_dw_impl; faster there, slower on wider 5x5 rows and at stride 2).
// Otherwise blocks: a chunk of CV vectors of channels (TAIL: the first cn only), one output row at a time,
// LP_DW_PX output pixels at a time: each fp32 weight vector serves them all and the LP_DW_PX x CV
// accumulators are independent chains. EDGE blocks (at the image's left / right border, or the row's short
// last block) skip taps outside the image per pixel; interior blocks are branch-free. The input is read in place.
constexpr int LP_DW_PX = 4;

template <class L, int KC, int SC, Act A, int CV, bool TAIL, bool EDGE>
inline void lp_dw_block(int k_rt, int s_rt, int cn, int i0, int i1, const typename L::E* in, int64_t yoff,
                        int64_t x0, int npx, int64_t in_ps, int64_t in_rs, int64_t in_w, const float* w, int64_t ldw,
                        const typename L::V::T* b0, typename L::E* o0, int64_t out_ps) {
  using V = typename L::V;
  using T = typename V::T;
  constexpr int W = V::W;
  const int k = KC ? KC : k_rt;
  const int s = SC ? SC : s_rt;
  T acc[LP_DW_PX][CV];
  for (int q = 0; q < LP_DW_PX; ++q)
    for (int v = 0; v < CV; ++v) acc[q][v] = b0[v];
  if constexpr (!EDGE && !TAIL && KC != 0 && V::W >= 8) {
    // interior, whole vectors, k known (x86): each input vector of the row is loaded (and widened) once and
    // serves every (pixel, tap) that reads it; the taps are memory operands of the FMAs (NEON's FMLA takes none:
    // there the loop below keeps a tap in registers for the block's pixels)
    constexpr int SPAN = (LP_DW_PX - 1) * SC + KC;
    for (int i = i0; i < i1; ++i) {
      const typename L::E* irow = in + (yoff + i) * in_rs + x0 * in_ps;
      const float* wrow = w + i * KC * ldw;
#pragma GCC unroll 16
      for (int m = 0; m < SPAN; ++m) {
        T xv[CV];
        for (int v = 0; v < CV; ++v) xv[v] = L::load(irow + m * in_ps + v * W);
#pragma GCC unroll 4
        for (int q = 0; q < LP_DW_PX; ++q) {
          const int j = m - q * SC;
          if (j < 0 || j >= KC) continue;
          for (int v = 0; v < CV; ++v) acc[q][v] = V::fma(V::loadu(wrow + j * ldw + v * W), xv[v], acc[q][v]);
        }
      }
    }
  } else {
    for (int i = i0; i < i1; ++i) {
      const typename L::E* irow = in + (yoff + i) * in_rs;
      for (int j = 0; j < k; ++j) {
        T wv[CV];
        for (int v = 0; v < CV; ++v)
          wv[v] = TAIL ? V::loadn(w + (i * k + j) * ldw + v * W, cn - v * W) : V::loadu(w + (i * k + j) * ldw + v * W);
        for (int q = 0; q < LP_DW_PX; ++q) {
          const int64_t xx = x0 + q * s + j;
          if (EDGE && (q >= npx || xx < 0 || xx >= in_w)) continue;
          const typename L::E* ip = irow + xx * in_ps;
          for (int v = 0; v < CV; ++v)
            acc[q][v] = V::fma(wv[v], TAIL ? L::loadn(ip + v * W, cn - v * W) : L::load(ip + v * W), acc[q][v]);
        }
      }
    }
  }
  for (int q = 0; q < (EDGE ? npx : LP_DW_PX); ++q)
    for (int v = 0; v < CV; ++v) {
      const T y = act_v<V, A>(acc[q][v]);
      typename L::E* op = o0 + q * out_ps + v * W;
      if (TAIL)
        L::storen(op, y, cn - v * W);
      else
        L::store(op, y);
    }
}

template <class L, int KC, int SC, Act A, int CV, bool TAIL>
inline void lp_dw_chunk(int k_rt, int s_rt, int cn, const typename L::E* in, int64_t in_ps, int64_t in_rs,
                        int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias,
                        typename L::E* out, int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
  using V = typename L::V;
  constexpr int W = V::W;
  const int k = KC ? KC : k_rt;
  const int s = SC ? SC : s_rt;
  const int p = k / 2;
  const int64_t out_w = (in_w - 1) / s + 1;
  // interior output columns [xlo, xhi): every tap inside the row
  const int64_t xlo = std::min<int64_t>(out_w, (p + s - 1) / s);
  const int64_t xhi = in_w - k + p >= 0 ? std::max<int64_t>(xlo, (in_w - k + p) / s + 1) : xlo;
  typename V::T b0[CV];
  for (int v = 0; v < CV; ++v)
    b0[v] = bias ? (TAIL ? V::loadn(bias + v * W, cn - v * W) : V::loadu(bias + v * W)) : V::zero();
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const int64_t y0 = oy * s - p;
    const int i0 = static_cast<int>(std::max<int64_t>(0, -y0));
    const int i1 = static_cast<int>(std::min<int64_t>(k, in_h - y0));
    typename L::E* orow = out + (oy - oy0) * out_rs;
    for (int64_t ox = 0; ox < out_w;) {
      int npx = static_cast<int>(std::min<int64_t>(LP_DW_PX, out_w - ox));
      if (ox < xlo) npx = static_cast<int>(std::min<int64_t>(npx, xlo - ox));
      if (ox >= xlo && ox + LP_DW_PX <= xhi)
        lp_dw_block<L, KC, SC, A, CV, TAIL, false>(k, s, cn, i0, i1, in, y0 - in_r0, ox * s - p, npx, in_ps, in_rs,
                                                   in_w, w, ldw, b0, orow + ox * out_ps, out_ps);
      else
        lp_dw_block<L, KC, SC, A, CV, TAIL, true>(k, s, cn, i0, i1, in, y0 - in_r0, ox * s - p, npx, in_ps, in_rs,
                                                  in_w, w, ldw, b0, orow + ox * out_ps, out_ps);
      ox += npx;
    }
  }
}

template <class L, int KC, int SC, Act A>
void lp_dw_impl(int64_t channels, int k, int s, const typename L::E* in, int64_t in_ps, int64_t in_rs, int64_t in_r0,
                int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias, typename L::E* out,
                int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
  constexpr int W = L::V::W, CV = 2;
  if (oy1 <= oy0 || channels <= 0) return;
  if (SC == 1 && (KC == 3 || in_w <= DW_ROW) &&
      dw_segments<L, KC, SC, A>(channels, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, out, out_ps, out_rs, oy0,
                                oy1))
    return;
  int64_t c = 0;
  for (; c + CV * W <= channels; c += CV * W)
    lp_dw_chunk<L, KC, SC, A, CV, false>(k, s, CV * W, in + c, in_ps, in_rs, in_r0, in_h, in_w, w + c, ldw,
                                         bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
  for (; c + W <= channels; c += W)
    lp_dw_chunk<L, KC, SC, A, 1, false>(k, s, W, in + c, in_ps, in_rs, in_r0, in_h, in_w, w + c, ldw,
                                        bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
  if (c < channels)
    lp_dw_chunk<L, KC, SC, A, 1, true>(k, s, static_cast<int>(channels - c), in + c, in_ps, in_rs, in_r0, in_h, in_w,
                                       w + c, ldw, bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
}

template <class L, Act A>
void lp_dw_k(int64_t channels, int k, int s, const typename L::E* in, int64_t in_ps, int64_t in_rs, int64_t in_r0,
             int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias, typename L::E* out,
             int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
#define MNV4_LP_DW(KC, SC) \
  lp_dw_impl<L, KC, SC, A>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, out, out_ps, out_rs, oy0, oy1)
  if (k == 3 && s == 1) return MNV4_LP_DW(3, 1);
  if (k == 3 && s == 2) return MNV4_LP_DW(3, 2);
  if (k == 5 && s == 1) return MNV4_LP_DW(5, 1);
  if (k == 5 && s == 2) return MNV4_LP_DW(5, 2);
  if (s == 1) return MNV4_LP_DW(0, 1);
  return MNV4_LP_DW(0, 2);
#undef MNV4_LP_DW
}

template <class L>
void lp_dw_dispatch(int64_t channels, int k, int s, const typename L::E* in, int64_t in_ps, int64_t in_rs,
                    int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias, Act act,
                    typename L::E* out, int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
  switch (act) {
    case Act::None:
      return lp_dw_k<L, Act::None>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, out, out_ps,
                                   out_rs, oy0, oy1);
    case Act::Relu:
      return lp_dw_k<L, Act::Relu>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, out, out_ps,
                                   out_rs, oy0, oy1);
    case Act::Gelu:
      return lp_dw_k<L, Act::Gelu>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, out, out_ps,
                                   out_rs, oy0, oy1);
  }
}

#endif  // MNV4_BF16_IMPL_H_IN_THIS_NAMESPACE
