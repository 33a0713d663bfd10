// The AMX tile-operation layer's portable emulation (the native layer: x86/amx_tiles.h). The AMX kernel
// (common/amx_conv_impl.h) is written against a Tiles type with
//   config(const TileConfig&), zero<t>(), load<t>(const void* base, int64_t stride_bytes),
//   load_part<t>(const void* base, int64_t stride_bytes, int rows, int bytes),
//   store<t>(void* base, int64_t stride_bytes), dpbf16ps<c, a, b>()
// (tile numbers compile-time, as the instructions encode them), so the same kernel logic runs through this
// emulation on every CPU (tests) and through the instructions where the CPU has AMX.
//
// Semantics reproduced from the instruction definitions (palette 1: 8 tiles of at most 16 rows x 64 bytes):
//   config: TileConfig is LDTILECFG's 64-byte operand. The layer's config is "make this the configuration":
//     the native layer skips LDTILECFG (~50 ns) when the thread's tiles already have it (read back with
//     STTILECFG, ~5 ns) and never releases them, so the tiles' contents after config are undefined; the
//     emulation fills every tile with 0xff bytes (NaN in fp32 and bf16), so a kernel that reads a tile it
//     did not zero or load fails the tests.
//   load<t>: rows r < rows[t] copy colsb[t] bytes from base + r*stride; the rest of the tile is zeroed.
//   load_part<t>: as load<t> of a tile configured with `rows` rows of `bytes` bytes (rows <= rows[t],
//     bytes <= colsb[t]); the rest of the tile is zeroed. Reads only those bytes: a partial block's A rows
//     or B pair rows in place, with no read past an operand (the native layer copies them with masked
//     AVX-512 loads into a zero-padded buffer and loads the tile from it).
//   store<t>: rows r < rows[t], colsb[t] bytes each. zero<t>: all zeros.
//   dpbf16ps<c, a, b>: for m < rows[c], n < colsb[c]/4, k < colsb[a]/4:
//       C[m][n] += A[m][2k] * B[k][2n];  C[m][n] += A[m][2k+1] * B[k][2n+1]
//     (fp32; bf16 products are exact in fp32, each add rounds to nearest even; bf16 inputs that are denormal
//     count as zero and denormal results are flushed to zero, as TDPBF16PS does), bytes of C past colsb[c]
//     and rows past rows[c] zeroed. Shapes that the instruction rejects (#UD: rows[a] != rows[c], colsb[b] !=
//     colsb[c], colsb[a] != 4*rows[b], more than 16 rows / 64 bytes, palette != 1) abort with a message, so a
//     kernel bug shows in the emulated tests instead of as a fault on AMX hardware only.
// The state is per thread, like the tile registers. Implemented in fallback/amx_emu.cpp (one copy, compiled
// without ISA extensions; the inline wrappers below only call it).
#pragma once

#include <cstdint>

namespace mnv4 {
namespace cpu {

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG operand is 64 bytes");

void amx_emu_config(const TileConfig* cfg);
void amx_emu_zero(int t);
void amx_emu_load(int t, const void* base, int64_t stride);
void amx_emu_load_part(int t, const void* base, int64_t stride, int rows, int bytes);
void amx_emu_store(int t, void* base, int64_t stride);
void amx_emu_dpbf16ps(int c, int a, int b);

struct AmxEmuTiles {
  static void config(const TileConfig& cfg) { amx_emu_config(&cfg); }
  template <int t>
  static void zero() { amx_emu_zero(t); }
  template <int t>
  static void load(const void* base, int64_t stride) { amx_emu_load(t, base, stride); }
  template <int t>
  static void load_part(const void* base, int64_t stride, int rows, int bytes) {
    amx_emu_load_part(t, base, stride, rows, bytes);
  }
  template <int t>
  static void store(void* base, int64_t stride) { amx_emu_store(t, base, stride); }
  template <int c, int a, int b>
  static void dpbf16ps() { amx_emu_dpbf16ps(c, a, b); }
};

}  // namespace cpu
}  // namespace mnv4
