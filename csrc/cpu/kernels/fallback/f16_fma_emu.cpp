// The fp16-arithmetic tile (common/f16_fma_impl.h) over a portable emulation of its fp16 vectors, with a scalar
// epilogue: f16_conv_nhwc_8x32__avx512fp16_emu, the same kernel logic as the native
// f16_conv_nhwc_8x32__avx512fp16 (row and column blocking, chunks, tails, the f16_k32 slabs) on every CPU
// (tests; never picked for computing). Each lane's multiply-add is rounded once to fp16 (f64_to_f16 of the
// exact double: see fallback/bf16_scalar.cpp's neon_fp16_emu), as vfmadd231ph rounds.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../interface/ukernels_bf16.h"

namespace mnv4 {
namespace cpu {
namespace f16_fma_emu {

#include "../common/scalar_vec.h"

// fp16 vectors of 2 lanes (2 * ScalarVec::W, as 32 lanes are 2 * 16 on AVX-512)
struct HalfEmu {
  struct T {
    f16_t v[2];
  };
  static T zero() { return T{{f16_t{0}, f16_t{0}}}; }
  static T load(const f16_t* p) { return T{{p[0], p[1]}}; }
  static T bcast(const f16_t* p) { return T{{p[0], p[0]}}; }
  static T fma(T a, T b, T c) {
    T r;
    for (int l = 0; l < 2; ++l)
      r.v[l] = f64_to_f16(double(f16_to_f32(a.v[l])) * double(f16_to_f32(b.v[l])) + double(f16_to_f32(c.v[l])));
    return r;
  }
  static float lo(T h) { return f16_to_f32(h.v[0]); }
  static float hi(T h) { return f16_to_f32(h.v[1]); }
};

#include "../common/vec_math.h"
#include "../common/bf16_impl.h"
#include "../common/f16_fma_impl.h"

}  // namespace f16_fma_emu

// 8 rows x 32 columns of one lane each: the slab width of the native 8 x 2 zmm tile (f16_k32)
void f16_conv_nhwc_8x32__avx512fp16_emu(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const f16_t* A,
                                        int64_t lda, const f16_t* B, int64_t bss, f16_t* C, int64_t ldc,
                                        const float* bias, Act act, const f16_t* R, int64_t ldr) {
  using namespace f16_fma_emu;
  using L = ScalarLp<f16_t>;
  lp_conv_dispatch<L, F16FmaTile<L, HalfEmu, kAvx512Fp16AccChunk>, 8, 32>(
      M, N, K, T, off, A, lda, B, bss, C, ldc, bias, act, R, ldr);
}

}  // namespace cpu
}  // namespace mnv4
