// The portable emulation of the AMX tile operations (semantics and contract: common/amx_tiles_emu.h), and the
// AMX kernel run through it with a scalar epilogue: bf16_conv_nhwc_32x32__amx_emu_portable, the same kernel
// logic as the native bf16_conv_nhwc_32x32__amx on every CPU (tests; never picked for computing).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../common/amx_tiles_emu.h"
#include "../interface/ukernels_bf16.h"

namespace mnv4 {
namespace cpu {

namespace {

struct EmuState {
  TileConfig cfg;
  bool configured = false;
  alignas(64) uint8_t tile[8][16][64];
};
EmuState& state() {
  static thread_local EmuState s;
  return s;
}

[[noreturn]] void fault(const char* what, int t) {
  std::fprintf(stderr, "AMX emulation: %s (tile %d): the instruction would raise #UD\n", what, t);
  std::abort();
}

void check_tile(int t, const char* op) {
  EmuState& s = state();
  if (!s.configured) fault("tile used before a tile configuration was loaded", t);
  if (t < 0 || t > 7) fault(op, t);
  if (s.cfg.rows[t] > 16 || s.cfg.colsb[t] > 64) fault("tile shape beyond palette 1 (16 rows x 64 bytes)", t);
}

float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// bf16 -> fp32 with denormals as zero
float bf16_daz(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  if ((h & 0x7f80u) == 0) h &= 0x8000u;
  return bits_f32(uint32_t(h) << 16);
}
float ftz(float x) { return std::fabs(x) < 1.17549435e-38f ? std::copysign(0.f, x) : x; }

}  // namespace

void amx_emu_config(const TileConfig* cfg) {
  EmuState& s = state();
  if (cfg->palette_id != 1) fault("palette other than 1", -1);
  s.cfg = *cfg;
  s.configured = true;
  std::memset(s.tile, 0xff, sizeof s.tile);  // undefined after the layer's config (amx_tiles_emu.h)
}

void amx_emu_zero(int t) {
  check_tile(t, "tilezero");
  std::memset(state().tile[t], 0, sizeof state().tile[t]);
}

void amx_emu_load(int t, const void* base, int64_t stride) {
  check_tile(t, "tileloadd");
  EmuState& s = state();
  std::memset(s.tile[t], 0, sizeof s.tile[t]);
  for (int r = 0; r < s.cfg.rows[t]; ++r)
    std::memcpy(s.tile[t][r], static_cast<const uint8_t*>(base) + r * stride, s.cfg.colsb[t]);
}

void amx_emu_load_part(int t, const void* base, int64_t stride, int rows, int bytes) {
  check_tile(t, "tileloadd");
  EmuState& s = state();
  if (rows < 0 || rows > s.cfg.rows[t] || bytes < 0 || bytes > s.cfg.colsb[t])
    fault("partial tile load beyond the tile's configured shape", t);
  std::memset(s.tile[t], 0, sizeof s.tile[t]);
  for (int r = 0; r < rows; ++r) std::memcpy(s.tile[t][r], static_cast<const uint8_t*>(base) + r * stride, bytes);
}

void amx_emu_store(int t, void* base, int64_t stride) {
  check_tile(t, "tilestored");
  EmuState& s = state();
  for (int r = 0; r < s.cfg.rows[t]; ++r)
    std::memcpy(static_cast<uint8_t*>(base) + r * stride, s.tile[t][r], s.cfg.colsb[t]);
}

void amx_emu_dpbf16ps(int c, int a, int b) {
  check_tile(c, "tdpbf16ps");
  check_tile(a, "tdpbf16ps");
  check_tile(b, "tdpbf16ps");
  EmuState& s = state();
  const TileConfig& g = s.cfg;
  if (c == a || c == b || a == b) fault("tdpbf16ps with repeated tile operands", c);
  if (g.rows[a] != g.rows[c] || g.colsb[b] != g.colsb[c] || g.colsb[a] != 4 * g.rows[b] || g.colsb[a] % 4 ||
      g.colsb[c] % 4)
    fault("tdpbf16ps operand shapes do not match", c);
  const int M = g.rows[c], N = g.colsb[c] / 4, K = g.colsb[a] / 4;
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) {
      float acc;
      std::memcpy(&acc, &s.tile[c][m][4 * n], 4);
      for (int k = 0; k < K; ++k) {
        acc = ftz(acc + bf16_daz(&s.tile[a][m][4 * k]) * bf16_daz(&s.tile[b][k][4 * n]));
        acc = ftz(acc + bf16_daz(&s.tile[a][m][4 * k + 2]) * bf16_daz(&s.tile[b][k][4 * n + 2]));
      }
      std::memcpy(&s.tile[c][m][4 * n], &acc, 4);
    }
    std::memset(&s.tile[c][m][4 * N], 0, 64 - 4 * N);
  }
  for (int m = M; m < 16; ++m) std::memset(s.tile[c][m], 0, 64);
}

// ---- the AMX kernel over the emulation, scalar epilogue ----
namespace amx_emu_portable {

#include "../common/scalar_vec.h"

#include "../common/vec_math.h"
#include "../common/bf16_impl.h"
#include "../common/amx_conv_impl.h"

}  // namespace amx_emu_portable

void bf16_conv_nhwc_32x32__amx_emu_portable(int64_t M, int64_t N, int64_t K, int T, const int64_t* off,
                                            const bf16_t* A, int64_t lda, const bf16_t* B, int64_t bss, bf16_t* C,
                                            int64_t ldc, const float* bias, Act act, const bf16_t* R, int64_t ldr) {
  amx_emu_portable::amx_conv_dispatch<AmxEmuTiles, amx_emu_portable::ScalarLp<bf16_t>>(M, N, K, T, off, A, lda, B, bss, C,
                                                                                 ldc, bias, act, R, ldr);
}

}  // namespace cpu
}  // namespace mnv4
