// Depthwise NHWC in row segments, written once over an element-traits type IO and used by the fp32 kernels
// (simd_impl.h, IO = F32Elems) and the reduced-precision ones (bf16_impl.h, IO = the table's L). Include it
// only from those two headers (an ISA file's target region and namespace; nothing here may be COMDAT-merged
// between ISAs), after vec_math.h.
//
// IO provides: V (the fp32 vector traits), E (the element in memory), load(const E*) / loadn(p, n) -> V::T
// (widened to fp32; loadn: the first n lanes, the rest 0) and store(E*, V::T) / storen(p, v, n) (rounded to E).
// Weights and biases are fp32 ([k*k][C] taps-major, as f32_dwconv_nhwc_fn); sums are fp32.
//
// k = KC (3 or 5), where the registers hold DW_ROW x CV accumulators and a tap row's weights (AVX-512,
// NEON): output rows in segments of up to DW_ROW pixels. In tap row i, input column u of a segment feeds
// its pixel q = (u - j) / s through tap j, so each input vector is loaded (and widened) once per tap row and
// each weight vector once per tap row; taps outside the image are never visited. Blocks of 4 pixels
// (simd_impl.h's dwn_block, bf16_impl.h's lp_dw_block) load more per multiply-add, and a 7-wide row with a
// 5x5 kernel has no interior block of 4 at all: every pixel would take the per-tap edge path. In fp32,
// faster than the blocks on short rows (stride 1 up to 56 wide, stride 2 into 7- and 8-wide rows); wider
// stride-2 rows gain nothing, so dw_segments leaves those to the blocks. With bf16 loads (a widening per
// input vector) only stride 1 gains, and a 5x5 kernel only on rows of at most DW_ROW: bf16_impl.h's
// lp_dw_impl calls dw_segments only there. Each accumulator sees its taps in the same order as in the
// blocks (tap rows, then increasing j): the same results.
// dw_rows: stride 1, rows of at most DW_ROW pixels, one segment starting at column 0 (faster there than the
// generic segment dw_seg). Both not inlined into their caller: inlined, the other paths' loops ran slower
// (code layout). dw_rows, dw_seg and dw_segments repeat their weight-load and store lines and channel loops
// on purpose: shared inline helpers for them left the results alike but ran the blocks' stride-2 rows
// slower, again by code layout.
#ifndef MNV4_DW_ROWS_IMPL_H_IN_THIS_NAMESPACE
#define MNV4_DW_ROWS_IMPL_H_IN_THIS_NAMESPACE

constexpr int DW_ROW = 8;
constexpr int DW_CV = 2;  // channel chunks of DW_CV vectors, then single vectors, then one masked vector

template <class IO, int KC, Act A, int CV, bool TAIL>
__attribute__((noinline)) void dw_rows(int cn, const typename IO::E* in, int64_t in_ps, int64_t in_rs,
                                       int64_t in_r0, int64_t in_h, int ow, const float* w, int64_t ldw,
                                       const float* bias, typename IO::E* out, int64_t out_ps, int64_t out_rs,
                                       int64_t oy0, int64_t oy1) {
  using V = typename IO::V;
  using T = typename V::T;
  constexpr int W = V::W, p = KC / 2;
  auto wld = [cn](const float* q, int v) { return TAIL ? V::loadn(q + v * W, cn - v * W) : V::loadu(q + v * W); };
  auto ld = [cn](const typename IO::E* q, int v) {
    return TAIL ? IO::loadn(q + v * W, cn - v * W) : IO::load(q + v * W);
  };
  T b0[CV];
  for (int v = 0; v < CV; ++v) b0[v] = bias ? wld(bias, v) : V::zero();
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const int64_t yoff = oy - p - in_r0;  // stored row of tap row 0
    const int i0 = static_cast<int>(std::max<int64_t>(0, p - oy));
    const int i1 = static_cast<int>(std::min<int64_t>(KC, in_h - oy + p));
    T acc[DW_ROW][CV];
    for (int q = 0; q < DW_ROW; ++q)
      for (int v = 0; v < CV; ++v) acc[q][v] = b0[v];
    for (int i = i0; i < i1; ++i) {
      const typename IO::E* irow = in + (yoff + i) * in_rs;
      T wv[KC][CV];
#pragma GCC unroll 8
      for (int j = 0; j < KC; ++j)
        for (int v = 0; v < CV; ++v) wv[j][v] = wld(w + (i * KC + j) * ldw, v);
#pragma GCC unroll 8
      for (int t = 0; t < DW_ROW; ++t) {
        if (t >= ow) break;  // stride 1: in_w == ow
        T xv[CV];
        for (int v = 0; v < CV; ++v) xv[v] = ld(irow + t * in_ps, v);
#pragma GCC unroll 8
        for (int j = 0; j < KC; ++j) {
          const int q = t + p - j;
          if (q < 0 || q >= DW_ROW || q >= ow) continue;
          for (int v = 0; v < CV; ++v) acc[q][v] = V::fma(wv[j][v], xv[v], acc[q][v]);
        }
      }
    }
    typename IO::E* orow = out + (oy - oy0) * out_rs;
#pragma GCC unroll 8
    for (int q = 0; q < DW_ROW; ++q) {
      if (q >= ow) break;
      for (int v = 0; v < CV; ++v) {
        typename IO::E* o = orow + q * out_ps + v * W;
        const T y = act_v<V, A>(acc[q][v]);
        if (TAIL && cn - v * W < W) {
          if (cn - v * W > 0) IO::storen(o, y, cn - v * W);
        } else {
          IO::store(o, y);
        }
      }
    }
  }
}

// One segment of npx <= DW_ROW output pixels from column x0 (see dw_rows): EDGE tests the image's edges
// and npx, LEFT is the segment at x0 == 0 (its left edge known here); interior segments test nothing.
template <class IO, int KC, int SC, Act A, int CV, bool TAIL, bool EDGE, bool LEFT>
inline void dw_seg(int cn, int i0, int i1, const typename IO::E* in, int64_t yoff, int64_t in_ps, int64_t in_rs,
                   int64_t in_w, int64_t x0, int npx, const float* w, int64_t ldw, const typename IO::V::T* b0,
                   typename IO::E* o0, int64_t out_ps) {
  using V = typename IO::V;
  using T = typename V::T;
  constexpr int W = V::W, p = KC / 2;
  auto wld = [cn](const float* q, int v) { return TAIL ? V::loadn(q + v * W, cn - v * W) : V::loadu(q + v * W); };
  auto ld = [cn](const typename IO::E* q, int v) {
    return TAIL ? IO::loadn(q + v * W, cn - v * W) : IO::load(q + v * W);
  };
  T acc[DW_ROW][CV];
  for (int q = 0; q < DW_ROW; ++q)
    for (int v = 0; v < CV; ++v) acc[q][v] = b0[v];
  for (int i = i0; i < i1; ++i) {
    const typename IO::E* irow = in + (yoff + i) * in_rs;
    T wv[KC][CV];
#pragma GCC unroll 8
    for (int j = 0; j < KC; ++j)
      for (int v = 0; v < CV; ++v) wv[j][v] = wld(w + (i * KC + j) * ldw, v);
#pragma GCC unroll 24
    for (int u = 0; u < (DW_ROW - 1) * SC + KC; ++u) {
      const int64_t x = (LEFT ? 0 : x0 * SC) - p + u;  // LEFT: x0 == 0, known here
      if (LEFT && u < p) continue;
      if (EDGE && !LEFT && x < 0) continue;
      if (EDGE && x >= in_w) break;  // x grows with u
      T xv[CV];
      for (int v = 0; v < CV; ++v) xv[v] = ld(irow + x * in_ps, v);
#pragma GCC unroll 8
      for (int j = 0; j < KC; ++j) {
        if (u < j || (u - j) % SC) continue;
        const int q = (u - j) / SC;
        if (q >= DW_ROW || (EDGE && q >= npx)) continue;
        for (int v = 0; v < CV; ++v) acc[q][v] = V::fma(wv[j][v], xv[v], acc[q][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int q = 0; q < DW_ROW; ++q) {
    if (EDGE && q >= npx) break;
    for (int v = 0; v < CV; ++v) {
      typename IO::E* o = o0 + q * out_ps + v * W;
      const T y = act_v<V, A>(acc[q][v]);
      if (TAIL && cn - v * W < W) {
        if (cn - v * W > 0) IO::storen(o, y, cn - v * W);
      } else {
        IO::store(o, y);
      }
    }
  }
}

// Stride SC, rows of any width (see dw_rows).
template <class IO, int KC, int SC, Act A, int CV, bool TAIL>
__attribute__((noinline)) void dw_segs(int cn, const typename IO::E* in, int64_t in_ps, int64_t in_rs,
                                       int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw,
                                       const float* bias, typename IO::E* out, int64_t out_ps, int64_t out_rs,
                                       int64_t oy0, int64_t oy1) {
  using V = typename IO::V;
  using T = typename V::T;
  constexpr int W = V::W, p = KC / 2;
  const int64_t out_w = (in_w - 1) / SC + 1;
  T b0[CV];
  for (int v = 0; v < CV; ++v)
    b0[v] = bias ? (TAIL ? V::loadn(bias + v * W, cn - v * W) : V::loadu(bias + v * W)) : V::zero();
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const int64_t yoff = oy * SC - p - in_r0;  // stored row of tap row 0
    const int i0 = static_cast<int>(std::max<int64_t>(0, p - oy * SC));
    const int i1 = static_cast<int>(std::min<int64_t>(KC, in_h - oy * SC + p));
    typename IO::E* orow = out + (oy - oy0) * out_rs;
    for (int64_t x0 = 0; x0 < out_w; x0 += DW_ROW) {
      const int npx = static_cast<int>(std::min<int64_t>(DW_ROW, out_w - x0));
      if (x0 == 0)
        dw_seg<IO, KC, SC, A, CV, TAIL, true, true>(cn, i0, i1, in, yoff, in_ps, in_rs, in_w, x0, npx, w, ldw, b0,
                                                    orow + x0 * out_ps, out_ps);
      else if ((x0 + DW_ROW - 1) * SC + p < in_w)
        dw_seg<IO, KC, SC, A, CV, TAIL, false, false>(cn, i0, i1, in, yoff, in_ps, in_rs, in_w, x0, npx, w, ldw, b0,
                                                      orow + x0 * out_ps, out_ps);
      else
        dw_seg<IO, KC, SC, A, CV, TAIL, true, false>(cn, i0, i1, in, yoff, in_ps, in_rs, in_w, x0, npx, w, ldw, b0,
                                                     orow + x0 * out_ps, out_ps);
    }
  }
}

// The whole depthwise conv in segments where they gain (see the top): returns false, having done nothing,
// where the caller's blocks are the faster path (k not compiled in, too few registers, wide stride-2 rows).
template <class IO, int KC, int SC, Act A>
inline bool dw_segments(int64_t channels, const typename IO::E* in, int64_t in_ps, int64_t in_rs, int64_t in_r0,
                        int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias,
                        typename IO::E* out, int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
  using V = typename IO::V;
  constexpr int W = V::W;
  if constexpr (SC > 0 && KC > 0 && (KC + DW_ROW + 1) * DW_CV + 2 <= V::kRegs) {
    int64_t c = 0;
    if (SC == 1 && in_w <= DW_ROW) {  // narrow rows: dw_rows (stride 1: out_w == in_w)
      const int ow = static_cast<int>(in_w);
      for (; c + DW_CV * W <= channels; c += DW_CV * W)
        dw_rows<IO, KC, A, DW_CV, false>(DW_CV * W, in + c, in_ps, in_rs, in_r0, in_h, ow, w + c, ldw,
                                         bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
      for (; c + W <= channels; c += W)
        dw_rows<IO, KC, A, 1, false>(W, in + c, in_ps, in_rs, in_r0, in_h, ow, w + c, ldw,
                                     bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
      if (c < channels)
        dw_rows<IO, KC, A, 1, true>(static_cast<int>(channels - c), in + c, in_ps, in_rs, in_r0, in_h, ow, w + c,
                                    ldw, bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
      return true;
    }
    // stride 2: only rows of at most DW_ROW outputs (one segment) gain, see the top
    if (SC == 1 || (in_w - 1) / SC + 1 <= DW_ROW) {
      for (; c + DW_CV * W <= channels; c += DW_CV * W)
        dw_segs<IO, KC, SC, A, DW_CV, false>(DW_CV * W, in + c, in_ps, in_rs, in_r0, in_h, in_w, w + c, ldw,
                                             bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
      for (; c + W <= channels; c += W)
        dw_segs<IO, KC, SC, A, 1, false>(W, in + c, in_ps, in_rs, in_r0, in_h, in_w, w + c, ldw,
                                         bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
      if (c < channels)
        dw_segs<IO, KC, SC, A, 1, true>(static_cast<int>(channels - c), in + c, in_ps, in_rs, in_r0, in_h, in_w,
                                        w + c, ldw, bias ? bias + c : nullptr, out + c, out_ps, out_rs, oy0, oy1);
      return true;
    }
  }
  return false;
}

#endif  // MNV4_DW_ROWS_IMPL_H_IN_THIS_NAMESPACE
