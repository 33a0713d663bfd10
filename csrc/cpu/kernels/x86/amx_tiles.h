// The AMX tile-operation layer over the instructions (AMX-TILE, AMX-BF16): the Tiles type of
// common/amx_conv_impl.h; its emulation, with the semantics spelled out, is common/amx_tiles_emu.h. Include
// only inside a `#pragma GCC target("amx-tile,amx-bf16,...")` region. Tile numbers are template arguments:
// the intrinsics encode them as immediates (GCC builds the register name from the macro argument's spelling,
// hence the literal cases).
#pragma once

#include <immintrin.h>

#include "../common/amx_tiles_emu.h"  // TileConfig

namespace mnv4 {
namespace cpu {

#define MNV4_TILE_CASES(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7)

struct AmxNativeTiles {
  static void config(const TileConfig& cfg) { _tile_loadconfig(&cfg); }
  static void release() { _tile_release(); }
  template <int t>
  static void zero() {
#define MNV4_TZ(i) if constexpr (t == i) _tile_zero(i);
    MNV4_TILE_CASES(MNV4_TZ)
#undef MNV4_TZ
  }
  template <int t>
  static void load(const void* base, int64_t stride) {
#define MNV4_TL(i) if constexpr (t == i) _tile_loadd(i, base, stride);
    MNV4_TILE_CASES(MNV4_TL)
#undef MNV4_TL
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
