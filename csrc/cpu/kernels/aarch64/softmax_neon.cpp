// NEON exp2 and column softmax (interface/softmax.h): the template common/softmax_impl.h with 4-lane
// q-register traits. Compiled only for aarch64.
#if defined(__aarch64__)

#include <arm_neon.h>

#include <cstdint>

#include "../interface/softmax.h"
#include "vec_neon.h"

namespace mnv4 {
namespace cpu {
namespace softmax_neon {

using VX = NeonVec;

#include "../common/softmax_impl.h"

}  // namespace softmax_neon

void f32_exp2__neon(int64_t n, const float* x, float* y) { softmax_neon::exp2_impl(n, x, y); }

void f32_softmax_cols__neon(int64_t M, int64_t N, float* S, int64_t lds, float* sum) {
  softmax_neon::softmax_cols_impl(M, N, S, lds, sum);
}

}  // namespace cpu
}  // namespace mnv4

#endif  // __aarch64__
