// AVX2+FMA exp2 and column softmax (interface/softmax.h): the template common/softmax_impl.h with 8-lane
// ymm traits. Only this file's functions are compiled for avx2+fma (pragma target, as x86/avx2_fma.cpp);
// interface/softmax_dispatch.cpp calls them only when the CPU has both.
#if defined(__x86_64__) || defined(_M_X64)

#include <cstdint>

#include "../interface/softmax.h"

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

#include "vec_avx2.h"

namespace mnv4 {
namespace cpu {
namespace softmax_avx2 {

using VX = Avx2Vec;

#include "../common/softmax_impl.h"

}  // namespace softmax_avx2

void f32_exp2__avx2_fma(int64_t n, const float* x, float* y) { softmax_avx2::exp2_impl(n, x, y); }

void f32_softmax_cols__avx2_fma(int64_t M, int64_t N, float* S, int64_t lds, float* sum) {
  softmax_avx2::softmax_cols_impl(M, N, S, lds, sum);
}

}  // namespace cpu
}  // namespace mnv4

#pragma GCC pop_options

#endif  // x86-64
