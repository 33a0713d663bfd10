// A CPU model of the few CUDA features the mnv4 kernels use, so that their device code (csrc/cuda/*_kernel.cuh)
// runs under g++ in CI, where there is no GPU (tests/test_cuda_compile.py, emu_main.cpp).
//
// - A CTA runs as blockDim.x std::threads; __syncthreads is a std::barrier; blocks run one after another
//   on the same threads.
// - Dynamic shared memory is one buffer per block, poisoned with 0xFF bytes (NaN in every float type) first,
//   so reading a shared element nobody wrote shows up as NaN in the result.
// - __half / __nv_bfloat16 are 16-bit values with round-to-nearest-even conversions (as the intrinsics).
// - nvcuda::wmma: a fragment is a whole 16x16 tile, computed by lane 0 of the warp (mma_sync multiplies
//   exactly and accumulates in fp32) and written by lane 0; every lane checks the alignment rules.
// This checks index math, tiling, masking, synchronisation order and numerics; it does not model warp
// scheduling, bank conflicts or the real fragment layouts.
#pragma once

#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct uint3_emu {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local uint3_emu threadIdx, blockIdx, blockDim, gridDim;

namespace mnv4_emu {
inline thread_local std::barrier<>* block_barrier = nullptr;
inline thread_local unsigned char* block_smem = nullptr;
inline unsigned char* dynamic_smem() { return block_smem; }
}  // namespace mnv4_emu

inline void __syncthreads() { mnv4_emu::block_barrier->arrive_and_wait(); }
inline int min(int a, int b) { return a < b ? a : b; }

struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) { return static_cast<float>(std::bit_cast<_Float16>(h.bits)); }
inline __half __float2half_rn(float f) { return __half{std::bit_cast<uint16_t>(static_cast<_Float16>(f))}; }
inline float __bfloat162float(__nv_bfloat16 h) { return std::bit_cast<float>(uint32_t(h.bits) << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if (std::isnan(f)) return __nv_bfloat16{uint16_t(0x7fc0)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return __nv_bfloat16{uint16_t(u >> 16)};
}

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator models 16x16x16 tiles only");
  float v[256];
};

// WMMA's documented requirements: a 256-bit aligned pointer and ldm a multiple of 16 bytes.
template <typename T>
inline void check_operand(const T* p, unsigned ld, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ld * sizeof(T)) % 16 != 0) {
    std::fprintf(stderr, "wmma %s: pointer %p not 32-byte aligned or ldm %u not a multiple of 16 bytes\n", what,
                 static_cast<const void*>(p), ld);
    std::abort();
  }
}

inline float to_float(float x) { return x; }
inline float to_float(__half x) { return __half2float(x); }
inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename U, typename T, typename L>
inline void fill_fragment(fragment<U, 16, 16, 16, T, L>& f, float x) {
  for (float& e : f.v) e = x;
}
template <typename T>
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, row_major>& f, const T* p, unsigned ld) {
  check_operand(p, ld, "load a");
  if (threadIdx.x % 32 != 0) return;  // only lane 0 stores; the others need no values
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r * 16 + c] = to_float(p[r * ld + c]);
}
template <typename T>
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, col_major>& f, const T* p, unsigned ld) {
  check_operand(p, ld, "load b");
  if (threadIdx.x % 32 != 0) return;  // only lane 0 stores; the others need no values
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n) f.v[k * 16 + n] = to_float(p[n * ld + k]);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ld, layout_t l) {
  check_operand(p, ld, "load accumulator");
  if (threadIdx.x % 32 != 0) return;  // only lane 0 stores; the others need no values
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r * 16 + c] = l == mem_row_major ? p[r * ld + c] : p[c * ld + r];
}
template <typename T>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, row_major>& a,
                     const fragment<matrix_b, 16, 16, 16, T, col_major>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  if (threadIdx.x % 32 != 0) return;
  float out[256];
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      double s = 0.0;  // exact products of 16-bit inputs; fp32 accumulation into c
      for (int k = 0; k < 16; ++k) s += double(a.v[r * 16 + k]) * double(b.v[k * 16 + n]);
      out[r * 16 + n] = c.v[r * 16 + n] + float(s);
    }
  std::memcpy(d.v, out, sizeof(out));
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ld, layout_t l) {
  check_operand(p, ld, "store");
  if (threadIdx.x % 32 != 0) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) (l == mem_row_major ? p[r * ld + c] : p[c * ld + r]) = f.v[r * 16 + c];
}
}  // namespace wmma
}  // namespace nvcuda

namespace mnv4_emu {
// Runs kernel<<<grid, block, smem>>>(args): blocks in order, each as `block` threads.
template <typename Args>
void launch(void (*kernel)(Args), unsigned grid, unsigned block, size_t smem, const Args& args) {
  // Exactly `smem` bytes (rounded up to 128), so that an access past the end trips AddressSanitizer.
  const size_t bytes = (smem + 127) / 128 * 128 + (smem == 0 ? 128 : 0);
  unsigned char* base = static_cast<unsigned char*>(std::aligned_alloc(128, bytes));
  // One std::thread per CUDA thread for the whole launch; blocks run one after another, separated by two
  // barrier phases (everyone done with the previous block; shared memory re-poisoned).
  std::barrier<> bar(block);
  std::vector<std::thread> threads;
  threads.reserve(block);
  for (unsigned t = 0; t < block; ++t) {
    threads.emplace_back([&, t] {
      threadIdx = {t, 0, 0};
      blockDim = {block, 1, 1};
      gridDim = {grid, 1, 1};
      block_barrier = &bar;
      block_smem = base;
      for (unsigned b = 0; b < grid; ++b) {
        bar.arrive_and_wait();
        if (t == 0) std::memset(base, 0xFF, bytes);
        bar.arrive_and_wait();
        blockIdx = {b, 0, 0};
        kernel(args);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::free(base);
}
}  // namespace mnv4_emu
