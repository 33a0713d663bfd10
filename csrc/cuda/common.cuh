// Shared device helpers for the mnv4 CUDA kernels (uib.cu, mqa.cu): dtype conversions, activations, the
// block-level GEMM on shared memory (tensor cores via WMMA for fp16/bf16 with fp32 accumulation, plain fp32
// FMA for fp32 so that fp32 results match the reference to ~1e-7, no TF32), and host-side helpers.
//
// Built with torch's nvcc flags (-D__CUDA_NO_HALF_OPERATORS__ / _CONVERSIONS__ ...), so every conversion
// below is an explicit intrinsic.
#pragma once

#ifdef MNV4_CUDA_EMU
// tests/test_cuda_compile.py builds the device code with g++ against a CPU emulation of the CUDA features
// used here (one std::thread per CUDA thread, std::barrier for __syncthreads, a WMMA model).
#include "cuda/emu/cuda_emu.h"
#define MNV4_DYNAMIC_SMEM(name) unsigned char* name = ::mnv4_emu::dynamic_smem()
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>
#define MNV4_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

#include <cstdint>
#include <type_traits>

#include "codes.h"

namespace mnv4 {
namespace cuda {

constexpr int kThreads = 256;  // every kernel here runs 256 threads (8 warps); block_gemm relies on it

// ---- dtype conversions -------------------------------------------------------------------------------
template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// ---- activations (ACT: an Activation code, csrc/codes.h) -----------------------------------------------
// NaN in -> NaN out, as torch.relu and F.gelu: the ReLU compares with `<` (false for NaN) instead of
// fmaxf(v, 0), which returns the non-NaN operand.
template <int ACT> __device__ __forceinline__ float activate(float v) {
  if constexpr (ACT == int(Activation::Relu)) {
    return v < 0.f ? 0.f : v;
  } else if constexpr (ACT == int(Activation::Gelu)) {
    return 0.5f * v * (1.f + erff(v * 0.70710678118654752440f));  // exact (erf) GELU
  } else {
    return v;
  }
}

// ---- shared-memory leading dimensions ------------------------------------------------------------------
// Operand arrays of element type T: +8 elements for 16-bit types (keeps WMMA's 32-byte alignment of every
// 16-row / 16-column tile, breaks bank conflicts), +1 for fp32 (odd stride: conflict-free column reads in
// the FMA GEMM). fp32 result arrays: +4 (WMMA store needs a multiple of 4 floats).
template <typename T> __host__ __device__ constexpr int ld_op(int k) { return k + (sizeof(T) == 4 ? 1 : 8); }
__host__ __device__ constexpr int ld_acc(int n) { return n + 4; }
__host__ __device__ constexpr int round_up(int v, int m) { return (v + m - 1) / m * m; }
// GEMM dimensions are padded (with zeros) to multiples of this: 16 for the WMMA tiles, 1 for the fp32 FMA
// path (which bounds-checks rows and columns), so fp32 does not spend shared memory on padding.
template <typename T> __host__ __device__ constexpr int gemm_pad() { return sizeof(T) == 4 ? 1 : 16; }

// ---- block GEMM on shared memory -------------------------------------------------------------------------
// C[M x N] (fp32, row-major, ldc) = (accumulate ? C : 0) + A[M x K] * B[K x N], where A is row-major T (lda)
// and B is stored column-major: element (k, n) at B[n * ldb + k] (i.e. a [N][K] weight slice as it sits in
// a 1x1 conv weight). For 16-bit T, M, N, K are multiples of 16 (gemm_pad) and the padding rows/columns of A
// and B hold zeros; for fp32 they are any sizes. All
// kThreads threads must call it; the caller synchronises before (operands ready) and after (C ready).
template <typename T>
__device__ __forceinline__ void block_gemm(const T* __restrict__ A, int lda, const T* __restrict__ B, int ldb,
                                           float* __restrict__ C, int ldc, int M, int N, int K, bool accumulate) {
  if constexpr (std::is_same_v<T, float>) {
    // fp32: each thread owns a 4 x 4 micro tile of a 64 x 64 block (rows tr + 16 i, columns tc + 16 j).
    const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
    for (int m0 = 0; m0 < M; m0 += 64) {
      for (int n0 = 0; n0 < N; n0 += 64) {
        float s[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) s[i][j] = 0.f;
        const float* ap[4];
        const float* bp[4];
        bool am[4], bm[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          int m = m0 + tr + 16 * i, n = n0 + tc + 16 * i;
          am[i] = m < M;
          bm[i] = n < N;
          ap[i] = A + (am[i] ? m : 0) * lda;
          bp[i] = B + (bm[i] ? n : 0) * ldb;
        }
        for (int k = 0; k < K; ++k) {
          float a[4], b[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            a[i] = am[i] ? ap[i][k] : 0.f;
            b[i] = bm[i] ? bp[i][k] : 0.f;
          }
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) s[i][j] = fmaf(a[i], b[j], s[i][j]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            if (am[i] && bm[j]) {
              float* c = C + (m0 + tr + 16 * i) * ldc + (n0 + tc + 16 * j);
              *c = accumulate ? *c + s[i][j] : s[i][j];
            }
          }
        }
      }
    }
  } else {
    // fp16 / bf16: tensor cores through WMMA 16x16x16 tiles, fp32 accumulators; one warp per C tile.
    using namespace nvcuda;
    const int warp = threadIdx.x / 32, nwarps = kThreads / 32;
    const int tm = M / 16, tn = N / 16;
    for (int t = warp; t < tm * tn; t += nwarps) {
      const int mi = t / tn, ni = t % tn;
      float* cp = C + mi * 16 * ldc + ni * 16;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      if (accumulate)
        wmma::load_matrix_sync(acc, cp, ldc, wmma::mem_row_major);
      else
        wmma::fill_fragment(acc, 0.f);
      const T* ap = A + mi * 16 * lda;
      const T* bp = B + ni * 16 * ldb;
      for (int k = 0; k < K; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, ap + k, lda);
        wmma::load_matrix_sync(fb, bp + k, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(cp, acc, ldc, wmma::mem_row_major);
    }
  }
}

// ---- shared-memory carving (host and device agree on the offsets computed on the host) ------------------
struct SmemCarver {
  int64_t bytes = 0;
  int64_t take(int64_t n) {
    int64_t off = (bytes + 127) / 128 * 128;
    bytes = off + n;
    return off;
  }
};

}  // namespace cuda
}  // namespace mnv4
