// The SIMD microkernels, written once over a small vector-traits type V and instantiated per ISA
// (x86/avx2_fma.cpp with V = Avx2Vec, x86/avx512.cpp with V = Avx512Vec, aarch64/neon.cpp with V = NeonVec).
// Include this only from an ISA file, after every standard header and inside that file's target region and
// its own namespace, so nothing here is shared (COMDAT-merged) between ISAs.
//
// V provides: T (register), W (lanes), zero(), set1(f), loadu(p), storeu(p, v), loadn(p, n) (first n lanes,
// rest 0; n may be <= 0 or >= W), storen(p, v, n) (first n lanes only), fma(a, b, c) = a*b + c, add(a, b),
// max(a, b), deinterleave2(p, even, odd) (2W floats at p -> lanes p[0], p[2], ... and p[1], p[3], ...),
// Mask, tail_mask(n) and loadm(p, m) (= loadn(p, n) with the mask made once, outside a loop).
//
// GEMM (see f32_gemm_fn): register tile MR rows x NV vectors; the k loop broadcasts A[r][k] for r < MR and
// loads NV vectors of B's row k, MR*NV FMAs per k. B (the activations, small) is packed per call into
// zero-padded NR-column panels; A (the weights, large) is used in place. Loop order: row blocks of A outer
// (the MR x K panel of the weights stays in L1 while the packed activations stream from L2), panels inner.
// Variants (rows in the last block 1..MR, activation, residual, partial last column tile) are template
// switches.
//
// Depthwise (see f32_dwconv_fn): per channel, the needed input rows are copied into zero-padded scratch
// rows, split into stride phases for s = 2 (phase j holds padded columns j, j+s, ...), so the inner loop is
// branch-free: out[oy][ox..ox+W) = sum_{i,j} w[i][j] * phase[j % s][row oy*s+i][ox + j/s ...]. Kernel sizes 3
// and 5 and strides 1, 2 are compile-time; other odd sizes take the runtime-k instantiation.

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

#include "vec_math.h"

// fp32 elements for the element-generic depthwise segments (dw_rows_impl.h): V's own loads and stores.
using F32Vec = V;
struct F32Elems {
  using V = F32Vec;
  using E = float;
  static inline V::T load(const float* p) { return V::loadu(p); }
  static inline V::T loadn(const float* p, int n) { return V::loadn(p, n); }
  static inline void store(float* p, V::T v) { V::storeu(p, v); }
  static inline void storen(float* p, V::T v, int n) { V::storen(p, v, n); }
};

#include "dw_rows_impl.h"

// Row i of a register tile: act, + residual (after the act), stored; TAIL: only the first nrem columns
// (and only those read from the residual). Shared by both GEMMs' epilogues.
template <int NV, Act A, bool RES, bool TAIL>
inline void store_tile_row(const typename V::T* acc, float* ci, const float* ri, int nrem) {
  constexpr int W = V::W;
  for (int v = 0; v < NV; ++v) {
    const int n = TAIL ? nrem - v * W : W;
    if (TAIL && n <= 0) break;
    typename V::T y = act_v<V, A>(acc[v]);
    if (RES) y = V::add(y, TAIL ? V::loadn(ri + v * W, n) : V::loadu(ri + v * W));
    if (TAIL && n < W)
      V::storen(ci + v * W, y, n);
    else
      V::storeu(ci + v * W, y);
  }
}

// One MR x (NV*W) register tile over the whole K. b: a packed panel (row k at b + k*ldb, every lane valid:
// zero padded). TAIL: only the first nrem columns are stored (and read from the residual).
template <int MR, int NV, Act A, bool RES, bool TAIL>
inline void gemm_tile(int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                      const float* bias, const float* r, int64_t ldr, int nrem) {
  constexpr int W = V::W;
  typename V::T acc[MR][NV];
  for (int i = 0; i < MR; ++i) {
    typename V::T b0 = bias ? V::set1(bias[i]) : V::zero();
    for (int v = 0; v < NV; ++v) acc[i][v] = b0;
  }
  for (int64_t k = 0; k < K; ++k) {
    typename V::T bv[NV];
    const float* bk = b + k * ldb;
    for (int v = 0; v < NV; ++v) bv[v] = V::loadu(bk + v * W);
    for (int i = 0; i < MR; ++i) {
      typename V::T av = V::set1(a[i * lda + k]);
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(av, bv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < MR; ++i)
    store_tile_row<NV, A, RES, TAIL>(acc[i], c + i * ldc, RES ? r + i * ldr : nullptr, nrem);
}

// Rows [0, MR) of C over all columns, from the packed panels of B (panel p: columns [p*NR, p*NR + NR)).
// A last panel of at most W columns runs a one-vector-wide tile (half or less of the work of a full one).
template <int MR, int NV, Act A, bool RES>
inline void gemm_rows(int64_t N, int64_t K, const float* a, int64_t lda, const float* packed, float* c, int64_t ldc,
                      const float* bias, const float* r, int64_t ldr) {
  constexpr int NR = NV * V::W;
  int64_t j = 0;
  for (; j + NR <= N; j += NR)
    gemm_tile<MR, NV, A, RES, false>(K, a, lda, packed + j * K, NR, c + j, ldc, bias, RES ? r + j : nullptr, ldr,
                                     NR);
  if (j == N) return;
  const int rem = static_cast<int>(N - j);
  if (rem <= V::W)
    gemm_tile<MR, 1, A, RES, true>(K, a, lda, packed + j * K, NR, c + j, ldc, bias, RES ? r + j : nullptr, ldr, rem);
  else
    gemm_tile<MR, NV, A, RES, true>(K, a, lda, packed + j * K, NR, c + j, ldc, bias, RES ? r + j : nullptr, ldr, rem);
}

// Packs B [K x N] (leading dimension ldb) into panels of NR columns, each K x NR contiguous, zero padded: the
// k loop then reads one aligned run per step whatever the caller's ldb, and the last panel needs no masks.
// The panels (K * round_up(N, NR) floats) are reused by every row block of A.
template <int NR>
inline void pack_b(int64_t N, int64_t K, const float* b, int64_t ldb, float* packed) {
  constexpr int W = V::W;
  for (int64_t j = 0; j < N; j += NR) {
    float* pj = packed + j * K;
    const int64_t n = N - j;
    if (n >= NR) {
      for (int64_t k = 0; k < K; ++k)
        for (int v = 0; v < NR / W; ++v) V::storeu(pj + k * NR + v * W, V::loadu(b + k * ldb + j + v * W));
    } else {
      for (int64_t k = 0; k < K; ++k)
        for (int v = 0; v < NR / W; ++v)
          V::storeu(pj + k * NR + v * W, V::loadn(b + k * ldb + j + v * W, static_cast<int>(n - v * W)));
    }
  }
}

template <int MR, int NV, Act A, bool RES>
void gemm_impl(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
               int64_t ldc, const float* bias, const float* r, int64_t ldr) {
  if (M <= 0 || N <= 0) return;
  constexpr int NR = NV * V::W;
  // Per-thread panel buffer, kept between calls.
  static thread_local std::vector<float> panels;
  const size_t need = static_cast<size_t>(K * round_up(N, NR));
  if (panels.size() < need) panels.resize(need);
  pack_b<NR>(N, K, b, ldb, panels.data());
  const float* packed = panels.data();
  int64_t i = 0;
  for (; i + MR <= M; i += MR)
    gemm_rows<MR, NV, A, RES>(N, K, a + i * lda, lda, packed, c + i * ldc, ldc, bias ? bias + i : nullptr,
                              RES ? r + i * ldr : nullptr, ldr);
  const int rem = static_cast<int>(M - i);
  if (rem == 0) return;
  a += i * lda;
  c += i * ldc;
  if (bias) bias += i;
  if (RES) r += i * ldr;
  // The last rows: one instantiation per count (MR <= 8).
  switch (rem) {
#define MNV4_ROWS(R) \
  case R: if (R < MR) gemm_rows<(R < MR ? R : 1), NV, A, RES>(N, K, a, lda, packed, c, ldc, bias, r, ldr); break;
    MNV4_ROWS(1) MNV4_ROWS(2) MNV4_ROWS(3) MNV4_ROWS(4) MNV4_ROWS(5) MNV4_ROWS(6) MNV4_ROWS(7)
#undef MNV4_ROWS
    default: break;
  }
}

template <int MR, int NV>
void gemm_dispatch(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb,
                   float* c, int64_t ldc, const float* bias, Act act, const float* r, int64_t ldr) {
  const bool res = r != nullptr;
  switch (act) {
    case Act::None:
      return res ? gemm_impl<MR, NV, Act::None, true>(M, N, K, a, lda, b, ldb, c, ldc, bias, r, ldr)
                 : gemm_impl<MR, NV, Act::None, false>(M, N, K, a, lda, b, ldb, c, ldc, bias, r, ldr);
    case Act::Relu:
      return res ? gemm_impl<MR, NV, Act::Relu, true>(M, N, K, a, lda, b, ldb, c, ldc, bias, r, ldr)
                 : gemm_impl<MR, NV, Act::Relu, false>(M, N, K, a, lda, b, ldb, c, ldc, bias, r, ldr);
    case Act::Gelu:
      return res ? gemm_impl<MR, NV, Act::Gelu, true>(M, N, K, a, lda, b, ldb, c, ldc, bias, r, ldr)
                 : gemm_impl<MR, NV, Act::Gelu, false>(M, N, K, a, lda, b, ldb, c, ldc, bias, r, ldr);
  }
}

// ---- depthwise ----

// The scratch layout (DW_GROUP channels x rows x (s phases, + for s == 2 an unsplit line of 2*plen + 16
// floats), one phase dw_phase_len floats, rows padded for vectors of up to 8 lanes) is ukernels.h's, where
// f32_dwconv_scratch_floats sizes it.

constexpr int DW_ROWS = 4;
constexpr int DW_GROUP = kDwGroup;

// Whether p[0, n) holds only finite values: x * 0 + acc stays 0 unless some x is NaN or infinite (4
// independent FMA chains: a weight tensor of a few thousand floats takes well under a microsecond).
inline bool all_finite(const float* p, int64_t n) {
  constexpr int W = V::W;
  const typename V::T z = V::zero();
  typename V::T a0 = z, a1 = z, a2 = z, a3 = z;
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    a0 = V::fma(V::loadu(p + i), z, a0);
    a1 = V::fma(V::loadu(p + i + W), z, a1);
    a2 = V::fma(V::loadu(p + i + 2 * W), z, a2);
    a3 = V::fma(V::loadu(p + i + 3 * W), z, a3);
  }
  for (; i < n; i += W) a0 = V::fma(V::loadn(p + i, static_cast<int>(n - i)), z, a0);
  float t[W];
  V::storeu(t, V::add(V::add(a0, a1), V::add(a2, a3)));
  for (int j = 0; j < W; ++j)
    if (t[j] != 0.f) return false;
  return true;
}

// R output rows of one channel from its padded scratch rows (srow: the first input row of the first output
// row; output row r reads scratch rows r*s + i, i < k).
template <int R, int KC, int SC, Act A>
inline void dw_rows(int k_rt, int s_rt, const float* wc, float bc, const float* srow, int64_t rlen, int64_t plen,
                    int64_t out_w, float* orow, int64_t out_rs) {
  constexpr int W = V::W;
  const int k = KC ? KC : k_rt;
  const int s = SC ? SC : s_rt;
  for (int64_t ox = 0; ox < out_w; ox += W) {
    typename V::T acc[R];
    for (int r = 0; r < R; ++r) acc[r] = V::set1(bc);
    for (int i = 0; i < k; ++i) {
      for (int j = 0; j < k; ++j) {
        const typename V::T wv = V::set1(wc[i * k + j]);
        const float* base = srow + i * rlen + (j % s) * plen + j / s + ox;
        for (int r = 0; r < R; ++r) acc[r] = V::fma(wv, V::loadu(base + r * s * rlen), acc[r]);
      }
    }
    const int64_t n = out_w - ox;
    for (int r = 0; r < R; ++r) {
      float* o = orow + r * out_rs + ox;
      const typename V::T y = act_v<V, A>(acc[r]);
      if (n >= W)
        V::storeu(o, y);
      else
        V::storen(o, y, static_cast<int>(n));
    }
  }
}

template <int KC, int SC, Act A>
void dwconv_impl(int64_t channels, int k_rt, int s_rt, const float* in, int64_t in_cs, int64_t in_rs, int64_t in_r0,
                 int64_t in_h, int64_t in_w, const float* w, const float* bias, float* out, int64_t out_cs,
                 int64_t out_rs, int64_t oy0, int64_t oy1, float* scratch) {
  constexpr int W = V::W;
  const int k = KC ? KC : k_rt;
  const int s = SC ? SC : s_rt;
  const int p = k / 2;
  const int64_t out_w = (in_w - 1) / s + 1;
  const int64_t plen = dw_phase_len(k, out_w);  // one phase
  const int64_t rlen = plen * s;                // one scratch row (s phases)
  const int64_t ry0 = oy0 * s - p;              // first logical input row needed
  const int64_t nrows = (oy1 - oy0 - 1) * s + k;
  const int64_t llen = 2 * plen + 2 * W;                 // s == 2: an unsplit padded line
  float* lines = scratch + DW_GROUP * nrows * rlen;  // s == 2 only
  if (oy1 <= oy0 || channels <= 0) return;
  // The padded scratch rows would multiply a weight on a tap outside the image by 0: NaN for a NaN or
  // infinite weight, where torch's conv skips the tap (ukernels.h, "NaN semantics"). A channel with such a
  // weight runs the scalar fallback, which skips those taps; the check costs ~k*k/W FMAs per channel.
  const bool finite = all_finite(w, channels * k * k);
  // Channels go in groups of DW_GROUP: the group's scratch rows are all built before any is read, so the
  // compute loads (at every column offset) do not wait on the just-issued stores (store forwarding fails
  // on loads that straddle two stores).
  for (int64_t c0 = 0; c0 < channels; c0 += DW_GROUP) {
    const int64_t c1 = c0 + DW_GROUP < channels ? c0 + DW_GROUP : channels;
    // 1. zero-padded copies of the needed rows (rlen, plen: multiples of 8 floats); for s == 2 first into
    //    unsplit lines, then (1b) split into phases: padded column q -> phase q % 2, index q / 2.
    for (int64_t c = c0; c < c1; ++c) {
      const float* ic = in + c * in_cs;
      for (int64_t rr = 0; rr < nrows; ++rr) {
        const int64_t y = ry0 + rr;
        float* dst = s == 1 ? scratch + ((c - c0) * nrows + rr) * rlen : lines + ((c - c0) * nrows + rr) * llen;
        const int64_t dlen = s == 1 ? rlen : llen;
        for (int64_t t = 0; t < dlen; t += W) V::storeu(dst + t, V::zero());
        if (y < 0 || y >= in_h) continue;
        const float* src = ic + (y - in_r0) * in_rs;
        for (int64_t x = 0; x < in_w; x += W)  // the zeros loadn adds past in_w land in the padding
          V::storeu(dst + p + x, V::loadn(src + x, static_cast<int>(in_w - x)));
      }
    }
    if (s != 1) {
      for (int64_t i = 0; i < (c1 - c0) * nrows; ++i) {
        const float* ln = lines + i * llen;
        float* row = scratch + i * rlen;
        for (int64_t t = 0; t < plen; t += W) {
          typename V::T ev, od;
          V::deinterleave2(ln + 2 * t, ev, od);
          V::storeu(row + t, ev);
          V::storeu(row + plen + t, od);
        }
      }
    }
    // 2. vectors along the output width, DW_ROWS output rows at a time (each weight broadcast serves them all)
    for (int64_t c = c0; c < c1; ++c) {
      const float* wc = w + c * k * k;
      if (!finite && !all_finite(wc, k * k)) {
        f32_dwconv__scalar(1, k, s, in + c * in_cs, in_cs, in_rs, in_r0, in_h, in_w, wc, bias ? bias + c : nullptr,
                           A, out + c * out_cs, out_cs, out_rs, oy0, oy1, nullptr);
        continue;
      }
      const float bc = bias ? bias[c] : 0.f;
      const float* sc = scratch + (c - c0) * nrows * rlen;
      float* oc = out + c * out_cs;
      int64_t oy = oy0;
      for (; oy + DW_ROWS <= oy1; oy += DW_ROWS)
        dw_rows<DW_ROWS, KC, SC, A>(k, s, wc, bc, sc + (oy - oy0) * s * rlen, rlen, plen, out_w,
                                    oc + (oy - oy0) * out_rs, out_rs);
      for (; oy < oy1; ++oy)
        dw_rows<1, KC, SC, A>(k, s, wc, bc, sc + (oy - oy0) * s * rlen, rlen, plen, out_w, oc + (oy - oy0) * out_rs,
                              out_rs);
    }
  }
}

template <Act A>
void dwconv_k(int64_t channels, int k, int s, const float* in, int64_t in_cs, int64_t in_rs, int64_t in_r0,
              int64_t in_h, int64_t in_w, const float* w, const float* bias, float* out, int64_t out_cs,
              int64_t out_rs, int64_t oy0, int64_t oy1, float* scratch) {
#define MNV4_DW(KC, SC) \
  dwconv_impl<KC, SC, A>(channels, k, s, in, in_cs, in_rs, in_r0, in_h, in_w, w, bias, out, out_cs, out_rs, oy0, oy1, scratch)
  if (k == 3 && s == 1) return MNV4_DW(3, 1);
  if (k == 3 && s == 2) return MNV4_DW(3, 2);
  if (k == 5 && s == 1) return MNV4_DW(5, 1);
  if (k == 5 && s == 2) return MNV4_DW(5, 2);
  if (s == 1) return MNV4_DW(0, 1);
  return MNV4_DW(0, 2);
#undef MNV4_DW
}

inline void dwconv_dispatch(int64_t channels, int k, int s, const float* in, int64_t in_cs, int64_t in_rs,
                            int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, const float* bias, Act act,
                            float* out, int64_t out_cs, int64_t out_rs, int64_t oy0, int64_t oy1, float* scratch) {
  switch (act) {
    case Act::None:
      return dwconv_k<Act::None>(channels, k, s, in, in_cs, in_rs, in_r0, in_h, in_w, w, bias, out, out_cs, out_rs,
                                 oy0, oy1, scratch);
    case Act::Relu:
      return dwconv_k<Act::Relu>(channels, k, s, in, in_cs, in_rs, in_r0, in_h, in_w, w, bias, out, out_cs, out_rs,
                                 oy0, oy1, scratch);
    case Act::Gelu:
      return dwconv_k<Act::Gelu>(channels, k, s, in, in_cs, in_rs, in_r0, in_h, in_w, w, bias, out, out_cs, out_rs,
                                 oy0, oy1, scratch);
  }
}

// ---- NHWC kernels (see f32_pwconv_nhwc_fn, f32_dwconv_nhwc_fn) ----
//
// Pointwise conv: rows of C are pixels, columns channels. Register tile MR pixels x NV vectors of channels:
// the k loop broadcasts A[p][k] (one pixel's input channel) and loads NV vectors of B's row k (the
// transposed weight, used in place: row k of a 16-column slab is one 64-byte line). Loop order: column
// slabs outer, so a K x NR slab of the weights stays in L1 while the pixels' rows stream past it. The
// last slab (N not a multiple of NR) uses masked loads and stores; the last rows (M % MR) their own
// instantiation. The same tile is the dense k x k conv (f32_conv_nhwc_fn): T taps, each a K-deep product
// of the pixels' rows shifted by off[t] with the next K rows of B, summed in the same registers; the
// pointwise conv is T = 1, off = {0}.

// pf / pf_lines: what the tile prefetches (towards L2) while it runs: pf_lines >= 0: that many 64-byte lines
// from pf, spread evenly over its T*K k steps (a packed next slab, shared out among the slab's row tiles);
// pf_lines < 0: the rows of a row-major slab, ldb apart, one row per k step.
// FIX: a shape known at compile time (StemShape below): K, T, lda and ldb are FIX's (the arguments are
// ignored), and every A element a tile reads is at a constant displacement from its tap's base a + off[t] plus
// k: no row pointers. The k steps stay a loop (unrolled, GCC hoisted the broadcasts and spilled accumulators).
// B (at most a few KB) stays in L1: no prefetch.
template <int MR, int NV, Act A, bool RES, bool TAIL, bool MASKB, class FIX = void>
inline void pw_tile(int64_t K, int T, const int64_t* off, const float* a, int64_t lda, const float* b, int64_t ldb,
                    float* c, int64_t ldc, const float* bias, const float* r, int64_t ldr, int nrem, const float* pf,
                    int64_t pf_lines) {
  constexpr int W = V::W;
  typename V::T acc[MR][NV];
  // MASKB (a tail slab of a row-major B, whose rows end at column N): B's vectors through masked loads.
  // A packed B's slabs are zero-padded to NR columns, so its tail slab is read with full loads: the masked
  // loads made GCC keep the accumulators in memory, stored every k (a tail slab then ran at well under half
  // the speed of a full one).
  typename V::Mask vm[NV];
  for (int v = 0; v < NV; ++v) {
    vm[v] = V::tail_mask(MASKB ? nrem - v * W : V::W);
    const typename V::T b0 =
        bias ? (TAIL ? V::loadn(bias + v * W, nrem - v * W) : V::loadu(bias + v * W)) : V::zero();
    for (int i = 0; i < MR; ++i) acc[i][v] = b0;
  }
  if constexpr (!std::is_void<FIX>::value) {
    constexpr int KF = FIX::K, LF = FIX::lda;
#pragma GCC unroll 1
    for (int t = 0; t < FIX::T; ++t) {
      const float* at = a + off[t];
      const float* bt = b + t * KF * FIX::ldb;
#pragma GCC unroll 1
      for (int k = 0; k < KF; ++k) {
        typename V::T bv[NV];
        for (int v = 0; v < NV; ++v) bv[v] = MASKB ? V::loadm(bt + k * FIX::ldb + v * W, vm[v])
                                                   : V::loadu(bt + k * FIX::ldb + v * W);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          const typename V::T av = V::set1(at[i * LF + k]);
          for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(av, bv[v], acc[i][v]);
        }
      }
    }
    (void)K, (void)T, (void)lda, (void)ldb, (void)pf, (void)pf_lines;
  } else {
  // Prefetches are issued per block of PW_KB k steps, outside the k loop itself: their bookkeeping inside it
  // made warm blocks slower than no spreading at all (likely register pressure next to the MR row
  // pointers). Flat: pf_lines spread evenly over the T*K steps.
  constexpr int64_t PW_KB = 8;
  const int64_t KT = int64_t(T) * K;
  int64_t kdone = 0, issued = 0;
  for (int t = 0; t < T; ++t) {  // taps: B's rows [t*K, t*K + K) against A shifted by off[t]
    const float* at = a + off[t];
    const float* bt = b + t * K * ldb;
    const float* pft = pf && pf_lines < 0 ? pf + t * K * ldb : nullptr;
    for (int64_t k0 = 0; k0 < K; k0 += PW_KB) {
      const int64_t k1 = std::min(K, k0 + PW_KB);
      if (pft) {  // the next slab's rows, towards L2 (both ends: a row may straddle two lines)
        for (int64_t k = k0; k < k1; ++k) {
          __builtin_prefetch(pft + k * ldb, 0, 2);
          __builtin_prefetch(pft + k * ldb + NV * W - 1, 0, 2);
        }
      } else if (pf_lines > 0) {
        kdone += k1 - k0;
        for (const int64_t due = pf_lines * kdone / KT; issued < due; ++issued)
          __builtin_prefetch(pf + issued * 16, 0, 2);
      }
      for (int64_t k = k0; k < k1; ++k) {
        typename V::T bv[NV];
        const float* bk = bt + k * ldb;
        for (int v = 0; v < NV; ++v) bv[v] = MASKB ? V::loadm(bk + v * W, vm[v]) : V::loadu(bk + v * W);
        for (int i = 0; i < MR; ++i) {
          const typename V::T av = V::set1(at[i * lda + k]);
          for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(av, bv[v], acc[i][v]);
        }
      }
    }
  }
  }
  for (int i = 0; i < MR; ++i)
    store_tile_row<NV, A, RES, TAIL>(acc[i], c + i * ldc, RES ? r + i * ldr : nullptr, nrem);
}

// The first NV vectors of `rows` rows of a tile's output C (for writing) and, with RES, of its residual R:
// prefetched one tile ahead (pw_slab). Each output line is written exactly once, into a fresh tensor that
// sits in L3 or DRAM, and without this every tile's stores wait on their read-for-ownership misses.
// Prefetching the next tile's input rows as well was slower: the input rows are in cache already.
template <int RW>
inline void prefetch_row(const float* p, int n) {  // every 64-byte line of p[0, n), for reading / writing
  for (int o = 0; o < n; o += 16) __builtin_prefetch(p + o, RW, 3);
  __builtin_prefetch(p + n - 1, RW, 3);  // a row that is not line-aligned ends in one more line
}
template <int NV, bool RES>
inline void prefetch_tile_rows(int64_t rows, float* c, int64_t ldc, const float* r, int64_t ldr) {
  for (int64_t q = 0; q < rows; ++q) {
    prefetch_row<1>(c + q * ldc, NV * V::W);
    if (RES) prefetch_row<0>(r + q * ldr, NV * V::W);
  }
}

// All M rows of one column slab. pf: the next slab (or nullptr), prefetched while this one runs. A row-major
// B's slab rows are ldb apart, often a page or more, where the hardware prefetchers do not follow: its rows
// during the first row tile. A packed next slab (pf_lines >= 0: its 64-byte lines, contiguous) is shared
// out evenly among all the row tiles, tile t taking lines [pf_lines * t / tiles, pf_lines * (t + 1) / tiles):
// all of it during the first tile would ask DRAM for up to 128 KB in one tile's time, more than the miss
// buffers hold.
template <int MR, int NV, Act A, bool RES, bool TAIL, bool MASKB = TAIL, class FIX = void>
inline void pw_slab(int64_t M, int64_t K, int T, const int64_t* off, const float* a, int64_t lda, const float* b,
                    int64_t ldb, float* c,
                    int64_t ldc, const float* bias, const float* r, int64_t ldr, int nrem, const float* pf,
                    int64_t pf_lines) {
  const int64_t tiles = (M + MR - 1) / MR;
  // tile t's prefetch: (pointer, pf_lines argument of pw_tile)
  auto tile_pf = [&](int64_t t) -> std::pair<const float*, int64_t> {
    if (pf_lines < 0) return {t == 0 ? pf : nullptr, -1};
    if (!pf) return {nullptr, 0};
    const int64_t lo = pf_lines * t / tiles, hi = pf_lines * (t + 1) / tiles;
    return {pf + lo * 16, hi - lo};
  };
  int64_t i = 0, tile = 0;
  for (; i + MR <= M; i += MR, ++tile) {
    const auto [p, n] = tile_pf(tile);
    if (i + MR < M)  // the next tile's output (and residual) rows: see prefetch_tile_rows
      prefetch_tile_rows<NV, RES>(std::min<int64_t>(MR, M - i - MR), c + (i + MR) * ldc, ldc,
                                  RES ? r + (i + MR) * ldr : nullptr, ldr);
    pw_tile<MR, NV, A, RES, TAIL, MASKB, FIX>(K, T, off, a + i * lda, lda, b, ldb, c + i * ldc, ldc, bias,
                                         RES ? r + i * ldr : nullptr, ldr, nrem, p, n);
  }
  if (i == M) return;
  const auto [rem_pf, rem_lines] = tile_pf(tile);
  const int rem = static_cast<int>(M - i);
  a += i * lda;
  c += i * ldc;
  if (RES) r += i * ldr;
  switch (rem) {
#define MNV4_PW_ROWS(R)                                                                                   \
  case R:                                                                                                 \
    if (R < MR)                                                                                           \
      pw_tile<(R < MR ? R : 1), NV, A, RES, TAIL, MASKB, FIX>(K, T, off, a, lda, b, ldb, c, ldc, bias, r, ldr,   \
                                                              nrem, rem_pf, rem_lines);                         \
    break;
    MNV4_PW_ROWS(1) MNV4_PW_ROWS(2) MNV4_PW_ROWS(3) MNV4_PW_ROWS(4) MNV4_PW_ROWS(5) MNV4_PW_ROWS(6)
    MNV4_PW_ROWS(7) MNV4_PW_ROWS(8) MNV4_PW_ROWS(9) MNV4_PW_ROWS(10) MNV4_PW_ROWS(11) MNV4_PW_ROWS(12)
    MNV4_PW_ROWS(13)
#undef MNV4_PW_ROWS
    default: break;
  }
}

// Rows in blocks of PW_MB = 32 register tiles (the block's rows of A stay in L2 while every column slab
// passes over them, rather than a large A re-read from L3 per slab), column slabs inside.
// Slab j (columns [j*NR, j*NR + NR)) of B starts at b + j*bss (see f32_pwconv_nhwc_fn): bss = NR for a
// row-major B, K*NR for packed slabs; either way the next slab is prefetched while a slab runs (see pw_slab).
template <int MR, int NV, Act A, bool RES, class FIX = void>
void pw_impl(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* a, int64_t lda, const float* b,
             int64_t ldb, int64_t bss,
             float* c, int64_t ldc, const float* bias, const float* r, int64_t ldr) {
  constexpr int64_t PW_MB = 32 * MR;
  if (M <= 0 || N <= 0) return;
  if (M > PW_MB + PW_MB / 2) {
    for (int64_t m0 = 0; m0 < M; m0 += PW_MB) {
      const int64_t mb = M - m0 < PW_MB + PW_MB / 2 ? M - m0 : PW_MB;  // no short last block
      pw_impl<MR, NV, A, RES, FIX>(mb, N, K, T, off, a + m0 * lda, lda, b, ldb, bss, c + m0 * ldc, ldc, bias,
                              RES ? r + m0 * ldr : nullptr, ldr);
      if (mb != PW_MB) break;
    }
    return;
  }
  constexpr int NR = NV * V::W;
  // A packed B (slabs of K' >= T*K rows x NR, zero-padded; K' > T*K when the caller reads a range of its
  // rows) has all NR columns of its last slab readable. A row-major B has bss = NR: with T*K == 1 and
  // ldb == NR it would look the same, so that one stays masked.
  const bool padded = ldb == NR && bss >= int64_t(T) * K * NR && int64_t(T) * K > 1;
  // the rows a slab uses, T*K x NR floats, are contiguous in a packed B: prefetched as flat lines
  const int64_t pf_lines = padded ? (int64_t(T) * K * NR + 15) / 16 : -1;
  // A packed next slab is prefetched only over at least two full row tiles. Over fewer (M < 2 * MR: the batch-1
  // and batch-8 heads' products) it lands in a short time, more lines than the miss buffers hold, queued ahead
  // of the slab's own loads, and the hardware prefetchers follow the contiguous slabs alone
  // (benches/results/ab-builds-fp32-head-*.json: the heads' time inside whole passes).
  const bool pf_next = pf_lines < 0 || M >= 2 * MR;
  int64_t j = 0;
  const float* bj = b;  // slab j / NR
  for (; j + NR <= N; j += NR, bj += bss)
    pw_slab<MR, NV, A, RES, false, false, FIX>(M, K, T, off, a, lda, bj, ldb, c + j, ldc, bias ? bias + j : nullptr,
                                   RES ? r + j : nullptr, ldr, NR, j + NR < N && pf_next ? bj + bss : nullptr,
                                   pf_lines);
  if (j == N) return;
  const int rem = static_cast<int>(N - j);
#define MNV4_PW_TAIL(NVT, MB)                                                                                   \
  pw_slab<MR, NVT, A, RES, true, MB, FIX>(M, K, T, off, a, lda, bj, ldb, c + j, ldc, bias ? bias + j : nullptr, \
                                     RES ? r + j : nullptr, ldr, rem, nullptr, -1)
  if (rem <= V::W) {
    if (padded) MNV4_PW_TAIL(1, false); else MNV4_PW_TAIL(1, true);
  } else {
    if (padded) MNV4_PW_TAIL(NV, false); else MNV4_PW_TAIL(NV, true);
  }
#undef MNV4_PW_TAIL
}

// The stems' conv (conv.cpp, 3 input channels, 3x3, stride 2): T = 3 taps (kernel rows) of K = 9 (3 pixels x
// 3 channels), lda = 6 (2 pixels x 3 channels), B in rows of NR. Short k loops: a tile's fixed cost (bias,
// epilogue, output prefetches) weighs on 27 k steps, so the stem runs the tallest tile the registers hold
// (MR x NV accumulators, NV B vectors and one broadcast: 14 x 2 zmm on AVX-512) with the shape compiled in.
template <int NR>
struct StemShape {
  static constexpr int K = 9, T = 3, lda = 6, ldb = NR;
};
template <int MR, int NV>
constexpr int stem_mr() {
  constexpr int fit = (V::kRegs - NV - 1) / NV;
  return fit > 14 ? 14 : fit < MR ? MR : fit;
}

template <int MR, int NV, class FIX = void>
void pw_act(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* a, int64_t lda, const float* b,
            int64_t ldb, int64_t bss, float* c, int64_t ldc, const float* bias, Act act, const float* r,
            int64_t ldr) {
  const bool res = r != nullptr;
  switch (act) {
    case Act::None:
      return res ? pw_impl<MR, NV, Act::None, true, FIX>(M, N, K, T, off, a, lda, b, ldb, bss, c, ldc, bias, r, ldr)
                 : pw_impl<MR, NV, Act::None, false, FIX>(M, N, K, T, off, a, lda, b, ldb, bss, c, ldc, bias, r, ldr);
    case Act::Relu:
      return res ? pw_impl<MR, NV, Act::Relu, true, FIX>(M, N, K, T, off, a, lda, b, ldb, bss, c, ldc, bias, r, ldr)
                 : pw_impl<MR, NV, Act::Relu, false, FIX>(M, N, K, T, off, a, lda, b, ldb, bss, c, ldc, bias, r, ldr);
    case Act::Gelu:
      return res ? pw_impl<MR, NV, Act::Gelu, true, FIX>(M, N, K, T, off, a, lda, b, ldb, bss, c, ldc, bias, r, ldr)
                 : pw_impl<MR, NV, Act::Gelu, false, FIX>(M, N, K, T, off, a, lda, b, ldb, bss, c, ldc, bias, r, ldr);
  }
}

template <int MR, int NV>
void pw_dispatch(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* a, int64_t lda,
                 const float* b, int64_t ldb,
                 int64_t bss, float* c, int64_t ldc, const float* bias, Act act, const float* r, int64_t ldr) {
  constexpr int NR = NV * V::W;
  using S = StemShape<NR>;
  if (K == S::K && T == S::T && lda == S::lda && ldb == S::ldb)
    return pw_act<stem_mr<MR, NV>(), NV, S>(M, N, K, T, off, a, lda, b, ldb, bss, c, ldc, bias, act, r, ldr);
  pw_act<MR, NV>(M, N, K, T, off, a, lda, b, ldb, bss, c, ldc, bias, act, r, ldr);
}

// Depthwise NHWC: a chunk of CV vectors of channels (TAIL: only the first cn channels valid, masked), one
// output row at a time, DWN_PX output pixels of the row at a time: each weight vector loaded once serves
// them all, and the DWN_PX x CV accumulators are independent FMA chains (one pixel alone would wait on the
// FMA latency: 7-wide rows with a 5x5 kernel have no interior block of 4). In blocks at the image's left or
// right edge (or the row's last, short block) taps outside the image are skipped per pixel (predictable
// branches: the same pattern every row); interior blocks run branch-free. Rows outside: per output row. The
// input is read in place: no padded copies.
constexpr int DWN_PX = 4;

// One block of npx <= DWN_PX output pixels of one row: acc = bias + sum over taps. EDGE: skip the taps
// outside [0, in_w) per pixel, and pixels q >= npx; else every tap of all DWN_PX pixels is inside. (Two
// instantiations rather than one function with both paths: sharing the accumulators between the
// branch-free and the branchy loop made GCC keep them in memory.)
template <int KC, int SC, Act A, int CV, bool TAIL, bool EDGE>
inline void dwn_block(int k, int s, int cn, int i0, int i1, const float* in, int64_t yoff, int64_t x0, int npx,
                      int64_t in_ps, int64_t in_rs, int64_t in_w, const float* w, int64_t ldw,
                      const typename V::T* b0, float* o0, int64_t out_ps) {
  constexpr int W = V::W;
  using T = typename V::T;
  auto ld = [cn](const float* q, int v) { return TAIL ? V::loadn(q + v * W, cn - v * W) : V::loadu(q + v * W); };
  T acc[DWN_PX][CV];
  for (int q = 0; q < DWN_PX; ++q)
    for (int v = 0; v < CV; ++v) acc[q][v] = b0[v];
  if constexpr (!EDGE && SC == 1 && KC > 0 && (KC + DWN_PX + 1) * CV + 4 <= V::kRegs) {
    // Stride 1, interior: input column t of the block feeds pixel q through tap j = t - q, so each input
    // vector is loaded once per tap row for up to KC pixels, with the row's KC weight vectors held in
    // registers (the tap-major loop below loads it once per tap and pixel: 1.25 loads per FMA for 4 pixels
    // x 2 vectors, here 0.65 for a 5x5). Each accumulator sees its taps in the same order as below.
    for (int i = i0; i < i1; ++i) {
      const float* irow = in + (yoff + i) * in_rs + x0 * in_ps;
      T wv[KC][CV];
#pragma GCC unroll 8
      for (int j = 0; j < KC; ++j)
        for (int v = 0; v < CV; ++v) wv[j][v] = ld(w + (i * KC + j) * ldw, v);
#pragma GCC unroll 16
      for (int t = 0; t < DWN_PX + KC - 1; ++t) {
        T xv[CV];
        for (int v = 0; v < CV; ++v) xv[v] = ld(irow + t * in_ps, v);
#pragma GCC unroll 8
        for (int q = 0; q < DWN_PX; ++q) {
          const int j = t - q;
          if (j < 0 || j >= KC) continue;
          for (int v = 0; v < CV; ++v) acc[q][v] = V::fma(wv[j][v], xv[v], acc[q][v]);
        }
      }
    }
  } else {
    for (int i = i0; i < i1; ++i) {
      const float* irow = in + (yoff + i) * in_rs;  // stored row of tap row i
      for (int j = 0; j < k; ++j) {
        T wv[CV];
        for (int v = 0; v < CV; ++v) wv[v] = ld(w + (i * k + j) * ldw, v);
        for (int q = 0; q < DWN_PX; ++q) {
          const int64_t xx = x0 + q * s + j;
          if (EDGE && (q >= npx || xx < 0 || xx >= in_w)) continue;
          const float* ip = irow + xx * in_ps;
          for (int v = 0; v < CV; ++v) acc[q][v] = V::fma(wv[v], ld(ip, v), acc[q][v]);
        }
      }
    }
  }
  for (int q = 0; q < (EDGE ? npx : DWN_PX); ++q)
    for (int v = 0; v < CV; ++v) {
      float* o = o0 + q * out_ps + v * W;
      const T y = act_v<V, A>(acc[q][v]);
      if (TAIL && cn - v * W < W) {
        if (cn - v * W > 0) V::storen(o, y, cn - v * W);
      } else {
        V::storeu(o, y);
      }
    }
}

template <int KC, int SC, Act A, int CV, bool TAIL>
inline void dwn_chunk(int k_rt, int s_rt, int cn, const float* in, int64_t in_ps, int64_t in_rs, int64_t in_r0,
                      int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias, float* out,
                      int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
  constexpr int W = V::W;
  using T = typename V::T;
  const int k = KC ? KC : k_rt;
  const int s = SC ? SC : s_rt;
  const int p = k / 2;
  const int64_t out_w = (in_w - 1) / s + 1;
  // interior output columns [xlo, xhi): every tap inside (ox*s - p >= 0 and ox*s - p + k <= in_w)
  const int64_t xlo = std::min<int64_t>(out_w, (p + s - 1) / s);
  const int64_t xhi = in_w - k + p >= 0 ? std::max<int64_t>(xlo, (in_w - k + p) / s + 1) : xlo;
  T b0[CV];
  for (int v = 0; v < CV; ++v) b0[v] = bias ? (TAIL ? V::loadn(bias + v * W, cn - v * W) : V::loadu(bias + v * W))
                                            : V::zero();
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const int64_t y0 = oy * s - p;
    const int i0 = static_cast<int>(std::max<int64_t>(0, -y0));
    const int i1 = static_cast<int>(std::min<int64_t>(k, in_h - y0));
    float* orow = out + (oy - oy0) * out_rs;
    for (int64_t ox = 0; ox < out_w;) {
      // blocks: the left-edge pixels [0, xlo), interior blocks of DWN_PX inside [xlo, xhi), then the rest
      int npx = static_cast<int>(std::min<int64_t>(DWN_PX, out_w - ox));
      if (ox < xlo) npx = static_cast<int>(std::min<int64_t>(npx, xlo - ox));
      if (ox >= xlo && ox + DWN_PX <= xhi)
        dwn_block<KC, SC, A, CV, TAIL, false>(k, s, cn, i0, i1, in, y0 - in_r0, ox * s - p, npx, in_ps, in_rs, in_w, w,
                                              ldw, b0, orow + ox * out_ps, out_ps);
      else
        dwn_block<KC, SC, A, CV, TAIL, true>(k, s, cn, i0, i1, in, y0 - in_r0, ox * s - p, npx, in_ps, in_rs, in_w, w,
                                             ldw, b0, orow + ox * out_ps, out_ps);
      ox += npx;
    }
  }
}

// Channels in chunks of DWN_CV vectors, then single vectors, then one masked vector.
constexpr int DWN_CV = DW_CV;

template <int KC, int SC, Act A>
void dwn_impl(int64_t channels, int k, int s, const float* in, int64_t in_ps, int64_t in_rs, int64_t in_r0,
              int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias, float* out, int64_t out_ps,
              int64_t out_rs, int64_t oy0, int64_t oy1) {
  constexpr int W = V::W;
  if (oy1 <= oy0 || channels <= 0) return;
  int64_t c = 0;
  if (dw_segments<F32Elems, KC, SC, A>(channels, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, out, out_ps,
                                      out_rs, oy0, oy1))
    return;
  for (; c + DWN_CV * W <= channels; c += DWN_CV * W)
    dwn_chunk<KC, SC, A, DWN_CV, false>(k, s, DWN_CV * W, in + c, in_ps, in_rs, in_r0, in_h, in_w, w + c, ldw,
                                        bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
  for (; c + W <= channels; c += W)
    dwn_chunk<KC, SC, A, 1, false>(k, s, W, in + c, in_ps, in_rs, in_r0, in_h, in_w, w + c, ldw,
                                   bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
  if (c < channels)
    dwn_chunk<KC, SC, A, 1, true>(k, s, static_cast<int>(channels - c), in + c, in_ps, in_rs, in_r0, in_h, in_w,
                                  w + c, ldw, bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
}

template <Act A>
void dwn_k(int64_t channels, int k, int s, const float* in, int64_t in_ps, int64_t in_rs, int64_t in_r0, int64_t in_h,
           int64_t in_w, const float* w, int64_t ldw, const float* bias, float* out, int64_t out_ps, int64_t out_rs,
           int64_t oy0, int64_t oy1) {
#define MNV4_DWN(KC, SC) \
  dwn_impl<KC, SC, A>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, out, out_ps, out_rs, oy0, oy1)
  if (k == 3 && s == 1) return MNV4_DWN(3, 1);
  if (k == 3 && s == 2) return MNV4_DWN(3, 2);
  if (k == 5 && s == 1) return MNV4_DWN(5, 1);
  if (k == 5 && s == 2) return MNV4_DWN(5, 2);
  if (s == 1) return MNV4_DWN(0, 1);
  return MNV4_DWN(0, 2);
#undef MNV4_DWN
}

inline void dwn_dispatch(int64_t channels, int k, int s, const float* in, int64_t in_ps, int64_t in_rs, int64_t in_r0,
                         int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias, Act act,
                         float* out, int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
  switch (act) {
    case Act::None:
      return dwn_k<Act::None>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, out, out_ps, out_rs,
                              oy0, oy1);
    case Act::Relu:
      return dwn_k<Act::Relu>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, out, out_ps, out_rs,
                              oy0, oy1);
    case Act::Gelu:
      return dwn_k<Act::Gelu>(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, out, out_ps, out_rs,
                              oy0, oy1);
  }
}
