// Host-side helpers shared by the CUDA entry points: dtype / activation dispatch to template arguments
// (flash-attention style: runtime flag -> compile-time constant), device limits, pointer casts.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
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

// Lets `Kernel` use up to the device's opt-in maximum of dynamic shared memory (max_smem_optin; every caller's
// plan is checked against it before the launch). Done once per kernel instantiation and device, under
// std::call_once: two threads making their first call at once cannot interleave (with a per-call size, a
// thread setting a smaller size after another recorded a larger one would make the larger launch fail), and
// later calls make no driver call at all (none inside a CUDA graph capture). The attribute is a ceiling, not a
// reservation: each launch still reserves only its own dynamic size. A failed call throws and leaves the flag
// unset, so the next call tries again. Devices past kMaxDevices set it on every call (always the same value,
// so concurrent calls agree).
template <auto Kernel>
inline void allow_smem(int device) {
  constexpr int kMaxDevices = 64;
  static std::once_flag once[kMaxDevices];
  auto raise = [device] {
    C10_CUDA_CHECK(
        cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(max_smem_optin(device))));
  };
  if (device >= 0 && device < kMaxDevices)
    std::call_once(once[device], raise);
  else
    raise();
}

// Typed device pointer of a tensor (nullptr for an undefined tensor, i.e. an absent optional weight).
template <typename T>
inline const T* cptr(const at::Tensor& t) { return t.defined() ? reinterpret_cast<const T*>(t.data_ptr()) : nullptr; }

// A contiguous copy (or the tensor itself) of an optional weight; undefined tensor when absent.
inline at::Tensor contig(const c10::optional<at::Tensor>& t) { return t.has_value() ? t->contiguous() : at::Tensor(); }

}  // namespace cuda
}  // namespace mnv4
