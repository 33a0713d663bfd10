// Argument validation and parameter structs for the mnv4 ops, shared by every backend (CPU, CUDA).
// Each op's kernel starts with `auto p = make_uib_params(...)` (or mqa); after it returns, every shape,
// dtype, device and flag has been checked, and the struct says everything a kernel needs to know.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <string>

namespace mnv4 {

enum class Activation : int { None = 0, Relu = 1, Gelu = 2 };

inline Activation parse_activation(const std::string& name) {
  if (name == "relu") return Activation::Relu;
  if (name == "gelu") return Activation::Gelu;
  if (name == "none") return Activation::None;
  TORCH_CHECK(false, "mnv4: activation must be one of \"relu\", \"gelu\", \"none\"; got \"", name, "\"");
}

// Output memory format rule, mirrored by mnv4_kernels/ops.py::_output_memory_format: channels_last when
// x is channels_last-contiguous and not also NCHW-contiguous; NCHW otherwise.
inline bool wants_channels_last(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// Output size of a k x k conv with padding k/2 (k odd) and the given stride.
inline int64_t conv_out_size(int64_t in, int64_t stride) { return (in - 1) / stride + 1; }

namespace detail {

inline void check_same(const at::Tensor& x, const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but x has dtype ", x.scalar_type(), " (mixed dtypes are not supported)");
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), " but x is on ", x.device());
}

// A 1x1 conv weight [out, in, 1, 1] (a 2-D [out, in] is accepted too); returns nothing, checks all.
inline void check_pointwise(const at::Tensor& x, const at::Tensor& w, const char* op, const char* name,
                            int64_t out, int64_t in) {
  check_same(x, w, op, name);
  bool ok = (w.dim() == 4 && w.size(2) == 1 && w.size(3) == 1) || w.dim() == 2;
  TORCH_CHECK(ok, op, ": ", name, " must be a 1x1 conv weight [out, in, 1, 1]; got shape ", w.sizes());
  if (out >= 0)
    TORCH_CHECK(w.size(0) == out, op, ": ", name, " must have ", out, " output channels; got shape ", w.sizes());
  TORCH_CHECK(w.size(1) == in, op, ": ", name, " must have ", in, " input channels; got shape ", w.sizes());
}

inline void check_bias(const at::Tensor& x, const at::Tensor& b, const char* op, const char* name, int64_t n) {
  check_same(x, b, op, name);
  TORCH_CHECK(b.dim() == 1 && b.size(0) == n, op, ": ", name, " must have shape [", n, "]; got ", b.sizes());
}

// A depthwise weight [C, 1, k, k] with k odd, and its bias [C]; both or neither. Returns k (0 if absent).
inline int64_t check_depthwise(const at::Tensor& x, const c10::optional<at::Tensor>& w,
                               const c10::optional<at::Tensor>& b, const char* op, const char* wname,
                               const char* bname, int64_t channels) {
  TORCH_CHECK(w.has_value() == b.has_value(), op, ": ", wname, " and ", bname,
              " must be given together (a depthwise conv carries its folded BatchNorm as a bias)");
  if (!w.has_value()) return 0;
  check_same(x, *w, op, wname);
  TORCH_CHECK(w->dim() == 4 && w->size(1) == 1, op, ": ", wname, " must be a depthwise weight [C, 1, k, k]; got shape ",
              w->sizes());
  TORCH_CHECK(w->size(0) == channels, op, ": ", wname, " must have ", channels, " channels; got shape ", w->sizes());
  TORCH_CHECK(w->size(2) == w->size(3), op, ": ", wname, " must be square; got shape ", w->sizes());
  TORCH_CHECK(w->size(2) % 2 == 1, op, ": ", wname, " must have an odd kernel size; got ", w->size(2));
  check_bias(x, *b, op, bname, channels);
  return w->size(2);
}

inline void check_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D [N, C, H, W]; got ndim ", x.dim(), " (shape ", x.sizes(), ")");
  auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, op,
              ": x must be float32, float16 or bfloat16; got ", dt);
  TORCH_CHECK(x.size(1) > 0 && x.size(2) > 0 && x.size(3) > 0, op,
              ": x must have at least one channel, row and column; got shape ", x.sizes());
}

}  // namespace detail

struct UibParams {
  int64_t batch, in_channels, height, width;  // x
  int64_t mid_channels, out_channels;
  int64_t out_height, out_width;
  int64_t start_kernel;  // 0 when there is no start dw
  int64_t mid_kernel;    // 0 when there is no mid dw
  int64_t start_stride;  // stride of the start dw (1 unless it carries the block's stride)
  int64_t mid_stride;    // stride of the mid dw
  int64_t stride;        // the block's stride
  bool residual;
  Activation activation;
  bool channels_last;    // output (and preferred compute) layout
};

inline UibParams make_uib_params(const at::Tensor& x, const c10::optional<at::Tensor>& start_dw_w,
                                 const c10::optional<at::Tensor>& start_dw_b, const at::Tensor& expand_w,
                                 const at::Tensor& expand_b, const c10::optional<at::Tensor>& mid_dw_w,
                                 const c10::optional<at::Tensor>& mid_dw_b, const at::Tensor& proj_w,
                                 const at::Tensor& proj_b, int64_t stride, bool residual,
                                 const std::string& activation) {
  constexpr const char* op = "mnv4::uib";
  detail::check_input(x, op);
  UibParams p{};
  p.batch = x.size(0);
  p.in_channels = x.size(1);
  p.height = x.size(2);
  p.width = x.size(3);
  p.activation = parse_activation(activation);
  TORCH_CHECK(stride == 1 || stride == 2, op, ": stride must be 1 or 2; got ", stride);
  p.stride = stride;

  p.start_kernel = detail::check_depthwise(x, start_dw_w, start_dw_b, op, "start_dw_w", "start_dw_b", p.in_channels);
  detail::check_pointwise(x, expand_w, op, "expand_w", -1, p.in_channels);
  p.mid_channels = expand_w.size(0);
  TORCH_CHECK(p.mid_channels > 0, op, ": expand_w must have at least one output channel");
  detail::check_bias(x, expand_b, op, "expand_b", p.mid_channels);
  p.mid_kernel = detail::check_depthwise(x, mid_dw_w, mid_dw_b, op, "mid_dw_w", "mid_dw_b", p.mid_channels);
  detail::check_pointwise(x, proj_w, op, "proj_w", -1, p.mid_channels);
  p.out_channels = proj_w.size(0);
  TORCH_CHECK(p.out_channels > 0, op, ": proj_w must have at least one output channel");
  detail::check_bias(x, proj_b, op, "proj_b", p.out_channels);

  p.mid_stride = p.mid_kernel ? stride : 1;
  p.start_stride = (!p.mid_kernel && p.start_kernel) ? stride : 1;
  TORCH_CHECK(stride == 1 || p.mid_kernel || p.start_kernel, op,
              ": stride=2 needs a depthwise conv to carry it (start_dw_w or mid_dw_w); the FFN form has none");
  p.out_height = conv_out_size(p.height, stride);
  p.out_width = conv_out_size(p.width, stride);
  TORCH_CHECK(!residual || stride == 1, op, ": residual=True needs stride=1; got stride=", stride);
  TORCH_CHECK(!residual || p.in_channels == p.out_channels, op, ": residual=True needs Cin == Cout; got Cin=",
              p.in_channels, ", Cout=", p.out_channels);
  p.residual = residual;
  p.channels_last = wants_channels_last(x);
  return p;
}

struct MqaParams {
  int64_t batch, channels, height, width;  // x
  int64_t num_heads, key_dim, value_dim;
  int64_t out_channels;
  int64_t kv_kernel;  // 0 when K/V take xn directly
  int64_t kv_stride;
  int64_t kv_height, kv_width;  // the K/V grid
  bool residual;
  bool channels_last;
};

inline MqaParams make_mqa_params(const at::Tensor& x, const at::Tensor& norm_scale, const at::Tensor& norm_shift,
                                 const at::Tensor& q_w, const c10::optional<at::Tensor>& k_dw_w,
                                 const c10::optional<at::Tensor>& k_dw_b, const at::Tensor& k_w,
                                 const c10::optional<at::Tensor>& v_dw_w, const c10::optional<at::Tensor>& v_dw_b,
                                 const at::Tensor& v_w, const at::Tensor& o_w, int64_t num_heads,
                                 int64_t kv_stride, bool residual) {
  constexpr const char* op = "mnv4::mqa";
  detail::check_input(x, op);
  MqaParams p{};
  p.batch = x.size(0);
  p.channels = x.size(1);
  p.height = x.size(2);
  p.width = x.size(3);
  detail::check_bias(x, norm_scale, op, "norm_scale", p.channels);
  detail::check_bias(x, norm_shift, op, "norm_shift", p.channels);
  TORCH_CHECK(num_heads >= 1, op, ": num_heads must be >= 1; got ", num_heads);
  p.num_heads = num_heads;
  detail::check_pointwise(x, q_w, op, "q_w", -1, p.channels);
  TORCH_CHECK(q_w.size(0) % num_heads == 0 && q_w.size(0) > 0, op, ": num_heads=", num_heads,
              " must divide the query width q_w.size(0)=", q_w.size(0));
  p.key_dim = q_w.size(0) / num_heads;
  detail::check_pointwise(x, k_w, op, "k_w", p.key_dim, p.channels);
  detail::check_pointwise(x, v_w, op, "v_w", -1, p.channels);
  p.value_dim = v_w.size(0);
  TORCH_CHECK(p.value_dim > 0, op, ": v_w must have at least one output channel");
  detail::check_pointwise(x, o_w, op, "o_w", -1, num_heads * p.value_dim);
  p.out_channels = o_w.size(0);
  TORCH_CHECK(kv_stride == 1 || kv_stride == 2, op, ": kv_stride must be 1 or 2; got ", kv_stride);
  p.kv_stride = kv_stride;
  int64_t kk = detail::check_depthwise(x, k_dw_w, k_dw_b, op, "k_dw_w", "k_dw_b", p.channels);
  int64_t kv = detail::check_depthwise(x, v_dw_w, v_dw_b, op, "v_dw_w", "v_dw_b", p.channels);
  TORCH_CHECK(kk == kv, op, ": k_dw_w and v_dw_w must both be given with the same kernel size, or both omitted");
  TORCH_CHECK(kv_stride == 1 || kk > 0, op, ": kv_stride=2 needs the K/V depthwise weights (k_dw_w, v_dw_w)");
  p.kv_kernel = kk;
  p.kv_height = conv_out_size(p.height, kv_stride);
  p.kv_width = conv_out_size(p.width, kv_stride);
  TORCH_CHECK(!residual || p.out_channels == p.channels, op, ": residual=True needs o_w to have ", p.channels,
              " output channels (C of x); got ", p.out_channels);
  p.residual = residual;
  p.channels_last = wants_channels_last(x);
  return p;
}

}  // namespace mnv4
