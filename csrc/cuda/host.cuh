// Host-side helpers shared by the CUDA entry points: dtype / activation dispatch to template arguments
// (flash-attention style: runtime flag -> compile-time constant), device limits, pointer casts.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "params.h"

namespace mnv4 {
namespace cuda {

// Calls f(T{}) with T = float, __half or __nv_bfloat16 for x's dtype (params.h already rejected others).
template <typename F>
void dispatch_dtype(at::ScalarType dt, const char* op, F&& f) {
  switch (dt) {
    case at::kFloat: f(float{}); break;
    case at::kHalf: f(__half{}); break;
    case at::kBFloat16: f(__nv_bfloat16{}); break;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", dt);
  }
}

// Calls f(std::integral_constant<int, ACT>{}) for the activation.
template <typename F>
void dispatch_act(Activation a, F&& f) {
  switch (a) {
    case Activation::Relu: f(std::integral_constant<int, int(Activation::Relu)>{}); break;
    case Activation::Gelu: f(std::integral_constant<int, int(Activation::Gelu)>{}); break;
    default: f(std::integral_constant<int, int(Activation::None)>{}); break;
  }
}

// The largest dynamic shared memory one block may opt into on the current device .
inline int64_t max_smem_optin(int device) {
  int v = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return v;
}

// Lets `Kernel` use `bytes` of dynamic shared memory on `device`. cudaFuncSetAttribute is called only when
// this kernel instantiation has not yet been allowed that much there (cheap on the per-call path, and no
// driver call at all inside a CUDA graph capture once the shapes have been seen).
template <auto Kernel>
inline void allow_smem(int device, int64_t bytes) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int64_t> allowed[kMaxDevices] = {};
  if (device >= 0 && device < kMaxDevices && allowed[device].load(std::memory_order_relaxed) >= bytes) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  if (device >= 0 && device < kMaxDevices) {
    int64_t cur = allowed[device].load();
    while (cur < bytes && !allowed[device].compare_exchange_weak(cur, bytes)) {
    }
  }
}

// Typed device pointer of a tensor (nullptr for an undefined tensor, i.e. an absent optional weight).
template <typename T>
inline const T* cptr(const at::Tensor& t) { return t.defined() ? reinterpret_cast<const T*>(t.data_ptr()) : nullptr; }

// A contiguous copy (or the tensor itself) of an optional weight; undefined tensor when absent.
inline at::Tensor contig(const c10::optional<at::Tensor>& t) { return t.has_value() ? t->contiguous() : at::Tensor(); }

}  // namespace cuda
}  // namespace mnv4
