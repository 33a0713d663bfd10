// The AMX tile-operation layer over the instructions (AMX-TILE, AMX-BF16): the Tiles type of
// common/amx_conv_impl.h; its emulation, with the semantics spelled out, is common/amx_tiles_emu.h. Include
// only inside a `#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512bw,...")` region (load_part copies with
// AVX-512). Tile numbers are template arguments: the intrinsics encode them as immediates (GCC builds the
// register name from the macro argument's spelling, hence the literal cases).
#pragma once

#include <immintrin.h>

#include <cstring>

#include "../common/amx_tiles_emu.h"  // TileConfig

namespace mnv4 {
namespace cpu {

#define MNV4_TILE_CASES(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7)

struct AmxNativeTiles {
  // LDTILECFG only when the thread's tiles are configured otherwise (another kernel, another library, or
  // none yet: STTILECFG of an unconfigured state stores zeros, palette 0); the tiles are never released.
  static void config(const TileConfig& cfg) {
    TileConfig now;
    _tile_storeconfig(&now);
    if (std::memcmp(&now, &cfg, sizeof cfg) != 0) _tile_loadconfig(&cfg);
  }
  template <int t>
  static void zero() {
#define MNV4_TZ(i) if constexpr (t == i) _tile_zero(i);
    MNV4_TILE_CASES(MNV4_TZ)
#undef MNV4_TZ
  }
  // GCC's _tile_loadd is an asm statement that does not tell the compiler it reads memory: the barrier
  // keeps the stores before it (load_part's buffer) ahead of it.
  template <int t>
  static void load(const void* base, int64_t stride) {
    __asm__ __volatile__("" : : "r"(base) : "memory");
#define MNV4_TL(i) if constexpr (t == i) _tile_loadd(i, base, stride);
    MNV4_TILE_CASES(MNV4_TL)
#undef MNV4_TL
  }
  template <int t>
  static void load_part(const void* base, int64_t stride, int rows, int bytes) {
    alignas(64) uint8_t buf[16][64];
    const __mmask64 m = bytes >= 64 ? ~0ull : (1ull << bytes) - 1;
    const uint8_t* src = static_cast<const uint8_t*>(base);
    for (int r = 0; r < 16; ++r)
      _mm512_store_si512(buf[r], r < rows ? _mm512_maskz_loadu_epi8(m, src + r * stride) : _mm512_setzero_si512());
    load<t>(buf, 64);
  }
  template <int t>
  static void store(void* base, int64_t stride) {
#define MNV4_TS(i) if constexpr (t == i) _tile_stored(i, base, stride);
    MNV4_TILE_CASES(MNV4_TS)
#undef MNV4_TS
  }
  template <int c, int a, int b>
  static void dpbf16ps() {
    // the kernel's four products: C tiles 0..3, A tiles 4, 5, B tiles 6, 7
    static_assert((c == 0 && a == 4 && b == 6) || (c == 1 && a == 4 && b == 7) || (c == 2 && a == 5 && b == 6) ||
                      (c == 3 && a == 5 && b == 7),
                  "the tile numbers of common/amx_conv_impl.h");
    if constexpr (c == 0) _tile_dpbf16ps(0, 4, 6);
    if constexpr (c == 1) _tile_dpbf16ps(1, 4, 7);
    if constexpr (c == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (c == 3) _tile_dpbf16ps(3, 5, 7);
  }
};

#undef MNV4_TILE_CASES

}  // namespace cpu
}  // namespace mnv4
