// The AMX-BF16 conv kernel (lp_conv_nhwc_fn, layout bf16_kpair32) over a tile-operation layer `Tiles`
// (x86/amx_tiles.h: the instructions; common/amx_tiles_emu.h: the portable emulation) and an epilogue traits
// type L (common/bf16_impl.h: V, E, loadn, storen). Include only from an ISA file, inside its namespace,
// after vec_math.h and bf16_impl.h.
//
// Blocking: 32 pixels x 32 channels of C per block = four 16 x 16 fp32 tiles (C00, C01, C10, C11: tiles 0..3);
// per 32 k of a tap, two A tiles (16 pixels x 32 bf16: tiles 4, 5, read in place from the pixel rows, stride
// lda) and two B tiles (16 k pairs x 16 columns: tiles 6, 7, read in place from the packed slab, whose rows of
// 32 pairs are 128 bytes: B0 the first 64 of them, B1 the next), then four tdpbf16ps. A block of at most 16
// rows uses only the top tiles (C00, C01, A 4), a block of at most 16 columns (N's last slab) only the left
// ones (C00, C10, B 6). The last k block of a tap (K % 32) and the last rows of M (fewer than 16 in a tile) go
// through Tiles::load_part: the rows and bytes inside the operands, zero past them, so nothing past the
// operands is read and the padding multiplies zeros (an A pad of 0 against a B row of the next tap, which
// could hold NaN, would not be safe: hence B's partial rows too; an odd K's last pair is zero in both).
// Per block, the C tiles go to an fp32 buffer and the epilogue adds the bias, applies the activation, adds the
// residual and rounds to bf16 with L.

// L::store2(p, lo, hi): 32 values rounded by one instruction and stored by one, where the traits have it
template <class L, class = void>
struct LpStore2 : std::false_type {};
template <class L>
struct LpStore2<L, std::void_t<decltype(L::store2(nullptr, L::V::zero(), L::V::zero()))>> : std::true_type {};

template <class Tiles, class L, Act A, bool RES>
void amx_conv_impl(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const bf16_t* a, int64_t lda,
                   const bf16_t* b, int64_t bss, bf16_t* c, int64_t ldc, const float* bias, const bf16_t* r,
                   int64_t ldr) {
  using V = typename L::V;
  constexpr int W = V::W;
  constexpr int NR = 32, KB = 32;
  if (M <= 0 || N <= 0) return;
  // The C block, on the stack: a thread_local buffer's address is a __tls_get_addr call in a shared library, which
  // GCC re-issued for every row of the epilogue.
  alignas(64) float cbuf[32 * NR];
  static const TileConfig cfg = [] {
    TileConfig g;
    std::memset(&g, 0, sizeof g);
    g.palette_id = 1;
    for (int t = 0; t < 8; ++t) g.rows[t] = 16, g.colsb[t] = 64;
    return g;
  }();
  Tiles::config(cfg);
  const int64_t Kp = (K + 1) / 2;
  struct Block {
    int64_t m0, n0;
    int rows, ncols;
  };
  auto compute = [&](const Block& e) {
    const bool two = e.rows > 16, wide = e.ncols > 16;
    Tiles::template zero<0>();
    if (wide) Tiles::template zero<1>();
    if (two) Tiles::template zero<2>();
    if (two && wide) Tiles::template zero<3>();
    const bf16_t* am = a + e.m0 * lda;
    const bf16_t* bj = b + (e.n0 / NR) * bss;
    const int r0 = std::min(16, e.rows), r1 = e.rows - 16;
    for (int t = 0; t < T; ++t) {
      const bf16_t* at = am + off[t];
      const bf16_t* bt = bj + t * Kp * 2 * NR;
      for (int64_t k0 = 0; k0 < K; k0 += KB) {
        const int kn = static_cast<int>(std::min<int64_t>(KB, K - k0));
        // A: rows [0, 16) and [16, rows) of the block, elements [k0, k0 + kn) of the tap; B: pair rows
        // [k0/2, k0/2 + np) of tap t (an odd K's last pair is zero-padded by the packing); each load just
        // before the first product that uses it.
        const int np = (kn + 1) / 2;
        const bf16_t* bsrc = bt + (k0 / 2) * 2 * NR;
        if (kn == KB && r0 == 16)
          Tiles::template load<4>(at + k0, lda * 2);
        else
          Tiles::template load_part<4>(at + k0, lda * 2, r0, kn * 2);
        if (np == 16)
          Tiles::template load<6>(bsrc, 2 * NR * 2);
        else
          Tiles::template load_part<6>(bsrc, 2 * NR * 2, np, 64);
        Tiles::template dpbf16ps<0, 4, 6>();
        if (wide) {
          if (np == 16)
            Tiles::template load<7>(bsrc + NR, 2 * NR * 2);
          else
            Tiles::template load_part<7>(bsrc + NR, 2 * NR * 2, np, 64);
          Tiles::template dpbf16ps<1, 4, 7>();
        }
        if (two) {
          if (kn == KB && r1 == 16)
            Tiles::template load<5>(at + 16 * lda + k0, lda * 2);
          else
            Tiles::template load_part<5>(at + 16 * lda + k0, lda * 2, r1, kn * 2);
          Tiles::template dpbf16ps<2, 5, 6>();
          if (wide) Tiles::template dpbf16ps<3, 5, 7>();
        }
      }
    }
  };
  auto store = [&](const Block& e, float* cb) {
    const bool two = e.rows > 16, wide = e.ncols > 16;
    Tiles::template store<0>(cb, NR * 4);
    if (wide) Tiles::template store<1>(cb + 16, NR * 4);
    if (two) Tiles::template store<2>(cb + 16 * NR, NR * 4);
    if (two && wide) Tiles::template store<3>(cb + 16 * NR + 16, NR * 4);
  };
  // rows < rows, columns < ncols of the block's C (cb) to bf16 in c. The bias vectors once per block; a full row
  // (32 columns: FULL, the vector count known at compile time) through L::store2 where L has it (one rounding
  // instruction and one store for both vectors).
  auto epilogue = [&](const Block& e, const float* cb) {
    constexpr int NVB = NR / W;
    typename V::T bv[NVB];
    for (int v = 0; v < NVB; ++v) {
      const int n = e.ncols - v * W;
      bv[v] = !bias || n <= 0 ? V::zero() : n >= W ? V::loadu(bias + e.n0 + v * W) : V::loadn(bias + e.n0 + v * W, n);
    }
    auto rows = [&](auto full) {
      constexpr bool FULL = decltype(full)::value;
      const int nv = FULL ? NVB : (e.ncols + W - 1) / W;
      for (int i = 0; i < e.rows; ++i) {
        const float* cr = cb + i * NR;
        bf16_t* ci = c + (e.m0 + i) * ldc + e.n0;
        const bf16_t* ri = RES ? r + (e.m0 + i) * ldr + e.n0 : nullptr;
        typename V::T y[NVB];
        for (int v = 0; v < nv; ++v) {
          const int n = FULL ? W : e.ncols - v * W;
          y[v] = V::loadu(cr + v * W);
          if (bias) y[v] = V::add(y[v], bv[v]);
          y[v] = act_v<V, A>(y[v]);
          if (RES) y[v] = V::add(y[v], n >= W ? L::load(ri + v * W) : L::loadn(ri + v * W, n));
        }
        if constexpr (FULL && NVB == 2 && LpStore2<L>::value) {
          L::store2(ci, y[0], y[1]);
        } else {
          for (int v = 0; v < nv; ++v) {
            const int n = FULL ? W : e.ncols - v * W;
            if (n >= W)
              L::store(ci + v * W, y[v]);
            else
              L::storen(ci + v * W, y[v], n);
          }
        }
      }
    };
    if (e.ncols == NR)
      rows(std::true_type{});
    else
      rows(std::false_type{});
  };
  for (int64_t m0 = 0; m0 < M; m0 += 32) {
    for (int64_t n0 = 0; n0 < N; n0 += NR) {
      const Block e{m0, n0, static_cast<int>(std::min<int64_t>(32, M - m0)),
                    static_cast<int>(std::min<int64_t>(NR, N - n0))};
      compute(e);
      store(e, cbuf);
      epilogue(e, cbuf);
    }
  }
}

template <class Tiles, class L>
void amx_conv_dispatch(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const bf16_t* a, int64_t lda,
                       const bf16_t* b, int64_t bss, bf16_t* c, int64_t ldc, const float* bias, Act act,
                       const bf16_t* r, int64_t ldr) {
#define MNV4_AMX(ACT)                                                                                   \
  return r ? amx_conv_impl<Tiles, L, ACT, true>(M, N, K, T, off, a, lda, b, bss, c, ldc, bias, r, ldr) \
           : amx_conv_impl<Tiles, L, ACT, false>(M, N, K, T, off, a, lda, b, bss, c, ldc, bias, r, ldr)
  switch (act) {
    case Act::None: MNV4_AMX(Act::None);
    case Act::Relu: MNV4_AMX(Act::Relu);
    case Act::Gelu: MNV4_AMX(Act::Gelu);
  }
#undef MNV4_AMX
}
