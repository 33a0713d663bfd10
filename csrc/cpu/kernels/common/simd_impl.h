// The SIMD microkernels, written once over a small vector-traits type V and instantiated per ISA
// (x86/avx2_fma.cpp with V = Avx2, aarch64/neon.cpp with V = Neon). Include this only from an ISA file, after
// every standard header and inside that file's target region and its own namespace, so nothing here is
// shared (COMDAT-merged) between ISAs.
//
// V provides: T (register), W (lanes), zero(), set1(f), loadu(p), storeu(p, v), loadn(p, n) (first n lanes,
// rest 0; n may be <= 0 or >= W), storen(p, v, n) (first n lanes only), fma(a, b, c) = a*b + c, add(a, b),
// max(a, b), deinterleave2(p, even, odd) (2W floats at p -> lanes p[0], p[2], ... and p[1], p[3], ...).
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

template <Act A>
inline typename V::T act_vec(typename V::T v) {
  if (A == Act::Relu) return V::max(v, V::zero());
  if (A == Act::Gelu) return gelu_v<V>(v);
  return v;
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
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    const float* ri = RES ? r + i * ldr : nullptr;
    for (int v = 0; v < NV; ++v) {
      const int n = TAIL ? nrem - v * W : W;
      if (TAIL && n <= 0) break;
      typename V::T y = act_vec<A>(acc[i][v]);
      if (RES) y = V::add(y, TAIL ? V::loadn(ri + v * W, n) : V::loadu(ri + v * W));
      if (TAIL && n < W)
        V::storen(ci + v * W, y, n);
      else
        V::storeu(ci + v * W, y);
    }
  }
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

// Row length (floats) of one padded scratch row, all phases together. Matches f32_dwconv_scratch_floats.
// One phase of a padded row: the vector loop reads columns < round_up(out_w, W) + (k - 1)/s (W divides 8).
inline int64_t dw_phase_len(int k, int64_t out_w) { return round_up(round_up(out_w, 8) + k, 8); }
// Scratch floats (must equal f32_dwconv_scratch_floats): DW_GROUP channels x rows x (s phases + for s == 2
// an unsplit line of 2*plen + 16 floats).

constexpr int DW_ROWS = 4;
constexpr int DW_GROUP = 8;  // = the factor in f32_dwconv_scratch_floats

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
      const typename V::T y = act_vec<A>(acc[r]);
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
