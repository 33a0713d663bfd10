// Packed copies of constant 1x1 weights, made once per weight tensor and reused by every later call.
//
// The NHWC GEMM reads its B (the weight, [K][N]) in column slabs: packed, a slab is one contiguous run the
// hardware prefetchers stream from DRAM; read in place from [K][N], each slab row is a separate 64-byte
// line, rows often a page apart, one DRAM miss at a time. In a whole model the weights are cold (a medium
// model's weights exceed the L3), so the packed copy pays off in every call. Packing per call would cost a
// full read and write of the weight, hence the cache.
//
// Validity: an entry is keyed by the weight's storage (held by a weak reference, so no other storage can
// take its address while the entry exists), offset, sizes, strides (weights of up to 4 dims; others are not
// cached), dtype and the packed layout (the kernel table and its slab width), and remembers the tensor's
// version counter: an in-place update of the weight (w.mul_(2), copy_, ...) makes the next call repack.
// Writes that bypass the version counter (through .data or a raw pointer) are not seen; the same holds for
// any prepacked-weight cache. Inference tensors carry no version counter: they are not
// cached (an fp32 caller reads the weight in place; a bf16/fp16 one packs it per call, with a warning once). Entries of freed weights are dropped on the next insert,
// and the least recently used ones beyond 512 MB in total.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>

#include <cstdint>
#include <functional>

#include "kernels/interface/ukernels.h"
#include "kernels/interface/ukernels_bf16.h"

namespace mnv4 {

// `make_kn()` gives the fp32 [K][N] row-major contiguous matrix form of `weight` (called only to pack).
// Returns that matrix packed for the NHWC GEMM of table `uk`, in slabs of slab = uk.conv_nhwc_tile.nr
// columns: element (k, n) at [(n / slab) * K * slab + k * slab + n % slab], the last slab zero-padded, as a
// 1-D fp32 tensor (its memory starts on a 64-byte line, in a chunk advised for transparent huge pages: see
// chunk_tensor in weight_cache.cpp); undefined when `weight` cannot be cached (see above).
at::Tensor packed_slabs(const at::Tensor& weight, const cpu::UKernels& uk, const std::function<at::Tensor()>& make_kn);

// `t`, a small constant tensor (a bias, a depthwise weight), as the fp32 tensor make() gives: for an fp32 `t`
// make() itself (a view or a cheap copy); otherwise make()'s result cached like the packed weights (keyed by
// `layout`, the form make() gives), so a bf16 model converts its biases and depthwise weights once, not per call.
at::Tensor fp32_constant(const at::Tensor& t, const char* layout, const std::function<at::Tensor()>& make);
// make()'s result for `t`, cached like fp32_constant's whatever t's dtype: for a constant that no view of an
// fp32 `t` gives (the MQA K weight with the softmax scale folded in), so it is computed once, not per call.
at::Tensor derived_constant(const at::Tensor& t, const char* layout, const std::function<at::Tensor()>& make);

// Number of live entries (tests).
int64_t packed_cache_entries();

// A GEMM operand B of the NHWC kernels: a 1x1 (or [ky][kx][C] x N) weight as [K][N], either read in place
// (rows ldb apart) or from its cached copy packed in slabs of `slab` columns (packed_slabs). ptr / row_stride
// / slab_stride give the B, ldb, bss of the microkernel contract for the block starting at row k0, column n0
// (packed: n0 a multiple of the slab width, the table's conv_nhwc_tile.nr; read in place, bss = slab too).
struct BMat {
  const float* plain;
  int64_t ldb;
  const float* packed;  // nullptr: read `plain`
  int64_t K, slab;
  const float* ptr(int64_t k0, int64_t n0) const {
    return packed ? packed + n0 / slab * K * slab + k0 * slab : plain + k0 * ldb + n0;
  }
  int64_t row_stride() const { return packed ? slab : ldb; }
  int64_t slab_stride() const { return packed ? K * slab : slab; }
};

// `weight` as a BMat with K rows and N columns, plus what keeps its memory alive: the cache entry, or the
// fp32 [K][N] matrix `make_kn()` returns (a view of a weight stored that way, else a copy made here).
struct WeightOperand {
  at::Tensor packed;
  at::Tensor plain;
  BMat mat;
};
inline WeightOperand weight_operand(const at::Tensor& weight, int64_t K, int64_t N, const cpu::UKernels& uk,
                                    const std::function<at::Tensor()>& make_kn) {
  const int64_t slab = std::max(1, uk.conv_nhwc_tile.nr);
  WeightOperand o;
  o.packed = packed_slabs(weight, uk, make_kn);
  const bool packed = o.packed.defined();
  if (!packed) o.plain = make_kn();
  o.mat = BMat{packed ? nullptr : o.plain.data_ptr<float>(), N, packed ? o.packed.data_ptr<float>() : nullptr, K, slab};
  return o;
}

// C[m][n] = act(A[m] . B[k0:k0+Kc, n0+n] + bias[n]) (+ R[m][n]) for m < M, n < Nc: one microkernel call.
inline void gemm_b(const cpu::UKernels& uk, int64_t M, int64_t Nc, int64_t Kc, const float* A, int64_t lda,
                   const BMat& b, int64_t k0, int64_t n0, float* C, int64_t ldc, const float* bias, cpu::Act act,
                   const float* R, int64_t ldr) {
  uk.pwconv_nhwc(M, Nc, Kc, A, lda, b.ptr(k0, n0), b.row_stride(), b.slab_stride(), C, ldc, bias, act, R, ldr);
}

// ---- bf16 / fp16 ----
// A storage type's torch forms: its c10 scalar (the same bits) and dtype.
template <class E>
struct LpStorage;
template <>
struct LpStorage<cpu::bf16_t> {
  using C10 = c10::BFloat16;
  static constexpr at::ScalarType dtype = at::kBFloat16;
};
template <>
struct LpStorage<cpu::f16_t> {
  using C10 = c10::Half;
  static constexpr at::ScalarType dtype = at::kHalf;
};

// A weight packed for the reduced-precision kernels of storage type E (ukernels_bf16.h: LpPack layout `pack`,
// T taps of K rows, N columns), rounded to E once from its fp32 [T*K][N] form. Cached like the fp32 copies,
// keyed by the layout's name and T as well; a weight that cannot be cached is packed for the call.
template <class E>
struct LpBMat {
  const E* packed;
  int64_t bss;  // slab stride (lp_slab_stride)
  cpu::LpPack pack;
  int T;
  int64_t K;  // rows per tap
  // B of the conv_nhwc contract for the columns from n0 (a multiple of pack.nr)
  const E* ptr(int64_t n0) const { return packed + n0 / pack.nr * bss; }
  // W(row, n) with row = t * K + k (the fp32 value of the packed element)
  float at(int64_t row, int64_t n) const {
    const int64_t t = row / K, k = row % K, nr = pack.nr;
    const E* s = packed + n / nr * bss;
    if (pack.kpair == 2) return cpu::to_f32(s[((t * ((K + 1) / 2) + k / 2) * nr + n % nr) * 2 + k % 2]);
    return cpu::to_f32(s[(t * K + k) * nr + n % nr]);
  }
};
template <class E>
struct LpWeightOperand {
  at::Tensor packed;  // keeps the packed weight alive
  LpBMat<E> mat;
};
// make_kn(): the weight as a [T*K][N] row-major matrix (any float dtype; converted to fp32 to pack).
// form: names what make_kn() computes when that is not the weight's own values (the MQA's K weight times the
// softmax scale), so the two forms of one tensor have separate entries; nullptr for the weight as it is.
// E: cpu::bf16_t or cpu::f16_t.
template <class E>
LpWeightOperand<E> lp_weight_operand(const at::Tensor& weight, const cpu::LpPack& pack, int T, int64_t K, int64_t N,
                                     const std::function<at::Tensor()>& make_kn, const char* form = nullptr);

}  // namespace mnv4
