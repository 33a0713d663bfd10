// Hot-cache rate of the NHWC GEMM register tile (x86 AVX-512), shipped against prototypes: is the tile
// or its loop the limit on Conv-M's early blocks? Not part of the library; built and run by
// benches/tile_shapes_cpu.py (g++ -O3, this repo's csrc on the include path).
//   tile_shapes_cpu M K N T REPS [LDA TAP_OFFSET]  ->  one JSON object per variant on stdout
// One call = C[M x N] = act(sum over T taps of A[M x K] (tap t at column t*K) x B_t + bias), B packed in
// the library's 32-column slabs (K*T x 32 each, as weight_cache.h stores them), M rows per call as the fused
// model passes them (benches/tile_shapes_cpu.py), every operand hot in L1/L2 (the same buffers each call).
// A conv (T > 1) reads A as conv.cpp's interior row call does: pixel p's tap t at p*LDA + t*TAP_OFFSET, the K
// floats of one kernel row (k pixels x C channels) contiguous and overlapping the next pixel's; a pointwise
// conv (T = 1) has LDA = K.
// Variants:
//   shipped_7x32   the library's f32_conv_nhwc_7x32__avx512 body (pw_dispatch<7, 2>): k loop in blocks of 8
//                  with the next slab's prefetches between blocks, next tile's output rows prefetched
//   plain_7x32     the same 7 x 2-zmm tile, a plain k loop, no prefetch
//   two_slab_RxC   R rows x 4 zmm (two adjacent slabs), plain loop, no prefetch (only when N % 64 == 0)
// Timing: best of 7 rounds of REPS calls, variants interleaved; each prototype's result is checked
// against shipped_7x32 (max_abs_diff).
#if defined(__x86_64__)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "cpu/kernels/interface/ukernels.h"

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,fma,prfchw")
// GCC 12's avx512fintrin.h false positives, as in csrc/cpu/kernels/x86/avx512.cpp
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "cpu/kernels/x86/vec_avx512.h"

namespace mnv4 {
namespace cpu {
namespace avx512 {
using V = Avx512Vec;
#include "cpu/kernels/common/simd_impl.h"

// MR rows x S slabs of 2 zmm; slab s of B at b + s*bss. Plain loops: no prefetch, no k blocking.
template <int MR, int S>
inline void plain_tile(int64_t K, int T, const int64_t* off, const float* a, int64_t lda, const float* b,
                       int64_t ldb, int64_t bss, float* c, int64_t ldc, const float* bias) {
  constexpr int W = V::W, NV = 2 * S;
  V::T acc[MR][NV];
  for (int v = 0; v < NV; ++v)
    for (int i = 0; i < MR; ++i) acc[i][v] = V::loadu(bias + v * W);
  for (int t = 0; t < T; ++t) {
    const float* at = a + off[t];
    const float* bt = b + t * K * ldb;
    for (int64_t k = 0; k < K; ++k) {
      V::T bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = V::loadu(bt + (v / 2) * bss + k * ldb + (v % 2) * W);
      for (int i = 0; i < MR; ++i) {
        const V::T av = V::set1(at[i * lda + k]);
        for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(av, bv[v], acc[i][v]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) store_tile_row<NV, Act::Relu, false, false>(acc[i], c + i * ldc, nullptr, 0);
}

template <int MR, int S>
void plain_gemm(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* a, int64_t lda,
                const float* b, int64_t bss, float* c, int64_t ldc, const float* bias) {
  for (int64_t j = 0; j < N; j += 32 * S) {
    const float* bj = b + (j / 32) * bss;
    int64_t i = 0;
    for (; i + MR <= M; i += MR)
      plain_tile<MR, S>(K, T, off, a + i * lda, lda, bj, 32, bss, c + i * ldc + j, ldc, bias + j);
    for (; i < M; ++i) plain_tile<1, S>(K, T, off, a + i * lda, lda, bj, 32, bss, c + i * ldc + j, ldc, bias + j);
  }
}
}  // namespace avx512
}  // namespace cpu
}  // namespace mnv4
#pragma GCC pop_options

using namespace mnv4::cpu;

int main(int argc, char** argv) {
  if ((argc != 6 && argc != 8) || !__builtin_cpu_supports("avx512f")) {
    std::fprintf(stderr, "usage: tile_shapes_cpu M K N T REPS [LDA TAP_OFFSET] (needs AVX-512F)\n");
    return 2;
  }
  const int64_t M = std::atoll(argv[1]), K = std::atoll(argv[2]), N = std::atoll(argv[3]);
  const int T = std::atoi(argv[4]), reps = std::atoi(argv[5]);
  const int64_t lda = argc == 8 ? std::atoll(argv[6]) : K * T, tap = argc == 8 ? std::atoll(argv[7]) : K;
  if (M < 1 || K < 1 || N < 32 || N % 32 || T < 1 || reps < 1 || lda < 1 || tap < 0) {
    std::fprintf(stderr, "M, K, T, REPS, LDA >= 1, TAP_OFFSET >= 0; N a multiple of 32\n");
    return 2;
  }
  const int64_t KT = K * T, bss = KT * 32;
  std::mt19937 gen(0);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  std::vector<float> a((M - 1) * lda + (T - 1) * tap + K), b(KT * N), bias(N), packed(KT * N);
  for (std::vector<float>* v : {&a, &b, &bias})
    for (float& x : *v) x = u(gen);
  for (int64_t j = 0; j < N / 32; ++j)
    for (int64_t k = 0; k < KT; ++k)
      std::memcpy(&packed[j * bss + k * 32], &b[k * N + j * 32], 32 * sizeof(float));
  std::vector<int64_t> off(T);
  for (int t = 0; t < T; ++t) off[t] = t * tap;

  // run(M, N, K, T, off, A, lda, packed B, slab stride, C, ldc, bias)
  using Run = void (*)(int64_t, int64_t, int64_t, int, const int64_t*, const float*, int64_t, const float*, int64_t,
                       float*, int64_t, const float*);
  struct Variant {
    const char* name;
    Run run;
  };
  const Variant all[] = {
      {"shipped_7x32", [](int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const float* a, int64_t lda,
                          const float* b, int64_t bss, float* c, int64_t ldc, const float* bias) {
         avx512::pw_dispatch<7, 2>(M, N, K, T, off, a, lda, b, 32, bss, c, ldc, bias, Act::Relu, nullptr, 0);
       }},
      {"plain_7x32", avx512::plain_gemm<7, 1>},
      {"two_slab_6x64", avx512::plain_gemm<6, 2>},
      {"two_slab_5x64", avx512::plain_gemm<5, 2>},
      {"two_slab_4x64", avx512::plain_gemm<4, 2>},
  };
  std::vector<const Variant*> vs;
  for (const Variant& v : all)
    if (std::strncmp(v.name, "two_slab", 8) != 0 || N % 64 == 0) vs.push_back(&v);
  std::vector<std::vector<float>> out(vs.size(), std::vector<float>(M * N));
  std::vector<double> best(vs.size(), 1e30);
  for (int round = 0; round < 7; ++round)
    for (size_t q = 0; q < vs.size(); ++q) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r)
        vs[q]->run(M, N, K, T, off.data(), a.data(), lda, packed.data(), bss, out[q].data(), N, bias.data());
      best[q] = std::min(best[q], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
    }
  for (size_t q = 0; q < vs.size(); ++q) {
    double diff = 0;
    for (int64_t i = 0; i < M * N; ++i) diff = std::max(diff, double(std::fabs(out[q][i] - out[0][i])));
    std::printf("{\"variant\": \"%s\", \"us\": %.3f, \"gflops\": %.2f, \"max_abs_diff\": %.3g}\n", vs[q]->name,
                best[q] * 1e6, 2.0 * M * N * KT / best[q] * 1e-9, diff);
  }
  return 0;
}
#else
#include <cstdio>
int main() {
  std::fprintf(stderr, "tile_shapes_cpu: x86-64 with AVX-512F only\n");
  return 2;
}
#endif
