// The CPU kernels of the mnv4 and mnv4_cpu ops, callable from C++ without the dispatcher (sequence.cpp runs
// a whole network through them in one call). Schemas and semantics: csrc/ops.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace mnv4 {

at::Tensor uib_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& start_dw_w,
                   const c10::optional<at::Tensor>& start_dw_b, const at::Tensor& expand_w, const at::Tensor& expand_b,
                   const c10::optional<at::Tensor>& mid_dw_w, const c10::optional<at::Tensor>& mid_dw_b,
                   const at::Tensor& proj_w, const at::Tensor& proj_b, int64_t stride, bool residual,
                   std::string activation);

at::Tensor mqa_cpu(const at::Tensor& x, const at::Tensor& norm_scale, const at::Tensor& norm_shift,
                   const at::Tensor& q_w, const c10::optional<at::Tensor>& k_dw_w,
                   const c10::optional<at::Tensor>& k_dw_b, const at::Tensor& k_w,
                   const c10::optional<at::Tensor>& v_dw_w, const c10::optional<at::Tensor>& v_dw_b,
                   const at::Tensor& v_w, const at::Tensor& o_w, int64_t num_heads, int64_t kv_stride, bool residual);

at::Tensor conv_cpu(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                    int64_t stride, std::string activation, const c10::optional<at::Tensor>& proj_weight,
                    const c10::optional<at::Tensor>& proj_bias, bool residual, bool channels_last,
                    std::string proj_activation);

at::Tensor mean_cpu(const at::Tensor& x);

at::Tensor pointwise_cpu(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                         std::string activation);

}  // namespace mnv4
