// The AMX-BF16 conv kernel (lp_conv_nhwc_fn, layout bf16_kpair32) over a tile-operation layer `Tiles`
// (x86/amx_tiles.h: the instructions; common/amx_tiles_emu.h: the portable emulation) and an epilogue traits
// type L (common/bf16_impl.h: V, E, loadn, storen). Include only from an ISA file, inside its namespace,
// after vec_math.h and bf16_impl.h.
//
// Blocking: 32 pixels x 32 channels of C per block = four 16 x 16 fp32 tiles (C00, C01, C10, C11: tiles 0..3);
// per 32 k of a tap, two A tiles (16 pixels x 32 bf16: tiles 4, 5, read in place from the pixel rows, stride
// lda) and two B tiles (16 k pairs x 16 columns: tiles 6, 7, read in place from the packed slab, whose rows of
// 32 pairs are 128 bytes: B0 the first 64 of them, B1 the next), then four tdpbf16ps. A block whose 32 k
// would pass the end of a tap's K (a partial k block: K % 32), or of M (fewer than 16 rows left), goes
// through zero-padded copies instead, so nothing past the operands is read and the padding multiplies zeros
// (an A pad of 0 against a B row of the next tap, which could hold NaN, would not be safe: hence the B copy).
// A block of at most 16 rows uses only C00, C01. The C tiles go to an fp32 buffer and the epilogue adds the
// bias, applies the activation, adds the residual and rounds to bf16 with L.

template <class Tiles, class L, Act A, bool RES>
void amx_conv_impl(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const bf16_t* a, int64_t lda,
                   const bf16_t* b, int64_t bss, bf16_t* c, int64_t ldc, const float* bias, const bf16_t* r,
                   int64_t ldr) {
  using V = typename L::V;
  constexpr int W = V::W;
  constexpr int NR = 32, KB = 32;
  if (M <= 0 || N <= 0) return;
  struct Scratch {
    alignas(64) bf16_t a[2][16 * KB];  // partial A tiles, 64-byte rows
    alignas(64) bf16_t b[16 * 2 * NR];  // a partial pair of B tiles, 128-byte rows
    alignas(64) float c[32 * NR];       // the C block
  };
  static thread_local Scratch sc;
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) cfg.rows[t] = 16, cfg.colsb[t] = 64;
  Tiles::config(cfg);
  const int64_t Kp = (K + 1) / 2;
  for (int64_t m0 = 0; m0 < M; m0 += 32) {
    const int rows = static_cast<int>(std::min<int64_t>(32, M - m0));
    const bool two = rows > 16;
    const bf16_t* am = a + m0 * lda;
    const bf16_t* bj = b;
    for (int64_t n0 = 0; n0 < N; n0 += NR, bj += bss) {
      const int ncols = static_cast<int>(std::min<int64_t>(NR, N - n0));
      Tiles::template zero<0>();
      Tiles::template zero<1>();
      if (two) {
        Tiles::template zero<2>();
        Tiles::template zero<3>();
      }
      for (int t = 0; t < T; ++t) {
        const bf16_t* at = am + off[t];
        const bf16_t* bt = bj + t * Kp * 2 * NR;
        for (int64_t k0 = 0; k0 < K; k0 += KB) {
          const int kn = static_cast<int>(std::min<int64_t>(KB, K - k0));
          // A tiles: rows [16q, 16q + 16) of the block, elements [k0, k0 + kn)
          for (int q = 0; q < (two ? 2 : 1); ++q) {
            const int rq = std::min(16, rows - 16 * q);
            const bf16_t* src = at + 16 * q * lda + k0;
            const void* p = src;
            int64_t stride = lda * 2;
            if (kn < KB || rq < 16) {
              bf16_t* d = sc.a[q];
              std::memset(static_cast<void*>(d), 0, sizeof sc.a[q]);
              for (int i = 0; i < rq; ++i) std::memcpy(static_cast<void*>(d + i * KB), src + i * lda, kn * 2);
              p = d;
              stride = KB * 2;
            }
            if (q == 0)
              Tiles::template load<4>(p, stride);
            else
              Tiles::template load<5>(p, stride);
          }
          // B tiles: pair rows [k0/2, k0/2 + 16) of tap t (an odd K's last pair is zero-padded by the packing)
          const int np = (kn + 1) / 2;
          const bf16_t* bsrc = bt + (k0 / 2) * 2 * NR;
          const bf16_t* bp = bsrc;
          if (np < 16) {
            std::memset(static_cast<void*>(sc.b), 0, sizeof sc.b);
            std::memcpy(static_cast<void*>(sc.b), bsrc, size_t(np) * 2 * NR * 2);
            bp = sc.b;
          }
          Tiles::template load<6>(bp, 2 * NR * 2);
          Tiles::template load<7>(bp + NR, 2 * NR * 2);
          Tiles::template dpbf16ps<0, 4, 6>();
          Tiles::template dpbf16ps<1, 4, 7>();
          if (two) {
            Tiles::template dpbf16ps<2, 5, 6>();
            Tiles::template dpbf16ps<3, 5, 7>();
          }
        }
      }
      Tiles::template store<0>(sc.c, NR * 4);
      Tiles::template store<1>(sc.c + 16, NR * 4);
      if (two) {
        Tiles::template store<2>(sc.c + 16 * NR, NR * 4);
        Tiles::template store<3>(sc.c + 16 * NR + 16, NR * 4);
      }
      // epilogue: rows < rows, columns < ncols
      for (int i = 0; i < rows; ++i) {
        const float* cr = sc.c + i * NR;
        bf16_t* ci = c + (m0 + i) * ldc + n0;
        const bf16_t* ri = RES ? r + (m0 + i) * ldr + n0 : nullptr;
        for (int col = 0; col < ncols; col += W) {
          const int n = ncols - col;
          typename V::T y = V::loadu(cr + col);
          if (bias) y = V::add(y, n >= W ? V::loadu(bias + n0 + col) : V::loadn(bias + n0 + col, n));
          y = act_v<V, A>(y);
          if (RES) y = V::add(y, n >= W ? L::load(ri + col) : L::loadn(ri + col, n));
          if (n >= W)
            L::store(ci + col, y);
          else
            L::storen(ci + col, y, n);
        }
      }
    }
  }
  Tiles::release();
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
