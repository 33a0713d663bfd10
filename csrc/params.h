// Argument validation and parameter structs of every op (mnv4::uib, mnv4::mqa and the CPU-only mnv4_cpu
// ops; schemas in csrc/ops.cpp), shared by every backend (CPU, CUDA). Each kernel starts with
// `const auto p = make_uib_params(...)` (or mqa, conv, pointwise; the sequence op checks its program with
// check_sequence); after it returns, every shape, dtype, device and flag has been checked, and the struct
// says everything a kernel needs to know. Kernels read these structs as they are (a kernel's own plan may
// extend one by inheritance); nothing is copied field by field into another struct of the same facts.
// mnv4_kernels/ops.py's fake kernels check the same rules.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <string>

#include "codes.h"

namespace mnv4 {

// `arg` of `op` ("relu" | "gelu" | "none") as its code.
inline Activation parse_activation(const std::string& name, const char* op, const char* arg = "activation") {
  if (name == "relu") return Activation::Relu;
  if (name == "gelu") return Activation::Gelu;
  if (name == "none") return Activation::None;
  TORCH_CHECK(false, op, ": ", arg, " must be one of \"relu\", \"gelu\", \"none\"; got \"", name, "\"");
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

inline void check_dtype(const at::Tensor& x, const char* op) {
  auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, op,
              ": x must be float32, float16 or bfloat16; got ", dt);
}

inline void check_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D [N, C, H, W]; got ndim ", x.dim(), " (shape ", x.sizes(), ")");
  check_dtype(x, op);
  TORCH_CHECK(x.size(1) > 0 && x.size(2) > 0 && x.size(3) > 0, op,
              ": x must have at least one channel, row and column; got shape ", x.sizes());
}

}  // namespace detail

// mnv4::uib. Short names, as in the kernels' index arithmetic.
struct UibParams {
  int64_t N, Cin, H, W;  // x
  int64_t mid, Cout;     // expanded and output channels
  int64_t Hs, Ws;        // the grid after the start dw: the expanded tensor's
  int64_t Ho, Wo;        // output
  int64_t ks, ss;        // start dw kernel (0: none) and stride (the block's stride when there is no mid dw)
  int64_t km, ms;        // mid dw kernel (0: none) and stride (the block's stride)
  int64_t stride;        // the block's stride
  bool residual;
  Activation act;        // after the expansion and after the mid dw
  bool channels_last;    // output memory format (follows x's: wants_channels_last)
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
  p.N = x.size(0);
  p.Cin = x.size(1);
  p.H = x.size(2);
  p.W = x.size(3);
  p.act = parse_activation(activation, op);
  TORCH_CHECK(stride == 1 || stride == 2, op, ": stride must be 1 or 2; got ", stride);
  p.stride = stride;

  p.ks = detail::check_depthwise(x, start_dw_w, start_dw_b, op, "start_dw_w", "start_dw_b", p.Cin);
  detail::check_pointwise(x, expand_w, op, "expand_w", -1, p.Cin);
  p.mid = expand_w.size(0);
  TORCH_CHECK(p.mid > 0, op, ": expand_w must have at least one output channel");
  detail::check_bias(x, expand_b, op, "expand_b", p.mid);
  p.km = detail::check_depthwise(x, mid_dw_w, mid_dw_b, op, "mid_dw_w", "mid_dw_b", p.mid);
  detail::check_pointwise(x, proj_w, op, "proj_w", -1, p.mid);
  p.Cout = proj_w.size(0);
  TORCH_CHECK(p.Cout > 0, op, ": proj_w must have at least one output channel");
  detail::check_bias(x, proj_b, op, "proj_b", p.Cout);

  p.ms = p.km ? stride : 1;
  p.ss = (!p.km && p.ks) ? stride : 1;
  TORCH_CHECK(stride == 1 || p.km || p.ks, op,
              ": stride=2 needs a depthwise conv to carry it (start_dw_w or mid_dw_w); the FFN form has none");
  p.Hs = conv_out_size(p.H, p.ss);
  p.Ws = conv_out_size(p.W, p.ss);
  p.Ho = conv_out_size(p.H, stride);
  p.Wo = conv_out_size(p.W, stride);
  TORCH_CHECK(!residual || stride == 1, op, ": residual=True needs stride=1; got stride=", stride);
  TORCH_CHECK(!residual || p.Cin == p.Cout, op, ": residual=True needs Cin == Cout; got Cin=", p.Cin, ", Cout=",
              p.Cout);
  p.residual = residual;
  p.channels_last = wants_channels_last(x);
  return p;
}

// mnv4::mqa.
struct MqaParams {
  int64_t N, C, H, W;       // x
  int64_t heads, dk, dv;    // query heads, key and value width (one shared K head and V head)
  int64_t Cout;             // output channels
  int64_t kk, kv_stride;    // K/V dw kernel (0: K/V take xn directly) and stride
  int64_t Hk, Wk;           // the K/V grid
  bool residual;
  bool channels_last;       // output memory format
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
  p.N = x.size(0);
  p.C = x.size(1);
  p.H = x.size(2);
  p.W = x.size(3);
  detail::check_bias(x, norm_scale, op, "norm_scale", p.C);
  detail::check_bias(x, norm_shift, op, "norm_shift", p.C);
  TORCH_CHECK(num_heads >= 1, op, ": num_heads must be >= 1; got ", num_heads);
  p.heads = num_heads;
  detail::check_pointwise(x, q_w, op, "q_w", -1, p.C);
  TORCH_CHECK(q_w.size(0) % num_heads == 0 && q_w.size(0) > 0, op, ": num_heads=", num_heads,
              " must divide the query width q_w.size(0)=", q_w.size(0));
  p.dk = q_w.size(0) / num_heads;
  detail::check_pointwise(x, k_w, op, "k_w", p.dk, p.C);
  detail::check_pointwise(x, v_w, op, "v_w", -1, p.C);
  p.dv = v_w.size(0);
  TORCH_CHECK(p.dv > 0, op, ": v_w must have at least one output channel");
  detail::check_pointwise(x, o_w, op, "o_w", -1, num_heads * p.dv);
  p.Cout = o_w.size(0);
  TORCH_CHECK(kv_stride == 1 || kv_stride == 2, op, ": kv_stride must be 1 or 2; got ", kv_stride);
  p.kv_stride = kv_stride;
  int64_t kk = detail::check_depthwise(x, k_dw_w, k_dw_b, op, "k_dw_w", "k_dw_b", p.C);
  int64_t kv = detail::check_depthwise(x, v_dw_w, v_dw_b, op, "v_dw_w", "v_dw_b", p.C);
  TORCH_CHECK(kk == kv, op, ": k_dw_w and v_dw_w must both be given with the same kernel size, or both omitted");
  TORCH_CHECK(kv_stride == 1 || kk > 0, op, ": kv_stride=2 needs the K/V depthwise weights (k_dw_w, v_dw_w)");
  p.kk = kk;
  p.Hk = conv_out_size(p.H, kv_stride);
  p.Wk = conv_out_size(p.W, kv_stride);
  TORCH_CHECK(!residual || p.Cout == p.C, op, ": residual=True needs o_w to have ", p.C,
              " output channels (C of x); got ", p.Cout);
  p.residual = residual;
  p.channels_last = wants_channels_last(x);
  return p;
}

// mnv4_cpu::conv: a k x k conv (+ bias, + act), optionally followed by a 1x1 projection (+ bias, + act)
// and the residual.
struct ConvParams {
  int64_t N, C, H, W;  // x
  int64_t O, k;        // the k x k conv's output channels and kernel size (odd)
  int64_t stride;
  int64_t P;           // output channels: the projection's, else O
  int64_t Ho, Wo;
  bool proj;           // proj_weight given
  bool residual;
  Activation act, proj_act;
  bool channels_last;  // output memory format: channels_last when asked for or when x is channels_last
};

inline ConvParams make_conv_params(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                   int64_t stride, const std::string& activation,
                                   const c10::optional<at::Tensor>& proj_weight,
                                   const c10::optional<at::Tensor>& proj_bias, bool residual, bool channels_last,
                                   const std::string& proj_activation) {
  constexpr const char* op = "mnv4_cpu::conv";
  detail::check_input(x, op);
  ConvParams p{};
  p.N = x.size(0);
  p.C = x.size(1);
  p.H = x.size(2);
  p.W = x.size(3);
  detail::check_same(x, weight, op, "weight");
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == p.C, op, ": weight must be [out, ", p.C, ", k, k] (x has ", p.C,
              " channels); got shape ", weight.sizes());
  TORCH_CHECK(weight.size(2) == weight.size(3) && weight.size(2) % 2 == 1, op,
              ": weight must have a square, odd kernel; got shape ", weight.sizes());
  TORCH_CHECK(weight.size(0) > 0, op, ": weight must have at least one output channel; got shape ", weight.sizes());
  p.O = weight.size(0);
  p.k = weight.size(2);
  if (bias.has_value()) detail::check_bias(x, *bias, op, "bias", p.O);
  TORCH_CHECK(stride == 1 || stride == 2, op, ": stride must be 1 or 2; got ", stride);
  p.stride = stride;
  p.act = parse_activation(activation, op);
  p.proj = proj_weight.has_value();
  TORCH_CHECK(p.proj || !proj_bias.has_value(), op, ": proj_bias given without proj_weight");
  p.proj_act = parse_activation(proj_activation, op, "proj_activation");
  TORCH_CHECK(p.proj || p.proj_act == Activation::None, op, ": proj_activation '", proj_activation,
              "' given without proj_weight");
  p.P = p.O;
  if (p.proj) {
    detail::check_pointwise(x, *proj_weight, op, "proj_weight", -1, p.O);
    p.P = proj_weight->size(0);
    TORCH_CHECK(p.P > 0, op, ": proj_weight must have at least one output channel");
    if (proj_bias.has_value()) detail::check_bias(x, *proj_bias, op, "proj_bias", p.P);
  }
  TORCH_CHECK(!residual || (stride == 1 && p.P == p.C), op,
              ": residual needs stride 1 and as many output channels as x has (", p.C, "); got stride ", stride,
              " and ", p.P, " output channels");
  p.residual = residual;
  p.Ho = conv_out_size(p.H, stride);
  p.Wo = conv_out_size(p.W, stride);
  p.channels_last = channels_last || wants_channels_last(x);
  return p;
}

// mnv4_cpu::pointwise: x [N, C] -> [N, O] or x [N, C, H, W] -> [N, O, H, W]; y = act(x W^T + bias).
struct PointwiseParams {
  int64_t rows, C, O;  // rows: pixels (N*H*W) or N
  bool four_d;
  Activation act;
  bool channels_last;  // 4-D output memory format (follows x's)
};

inline PointwiseParams make_pointwise_params(const at::Tensor& x, const at::Tensor& weight,
                                             const c10::optional<at::Tensor>& bias, const std::string& activation) {
  constexpr const char* op = "mnv4_cpu::pointwise";
  TORCH_CHECK(x.dim() == 2 || x.dim() == 4, op, ": x must be 2-D [N, C] or 4-D [N, C, H, W]; got ndim ", x.dim());
  detail::check_dtype(x, op);
  PointwiseParams p{};
  p.C = x.size(1);
  detail::check_pointwise(x, weight, op, "weight", -1, p.C);
  p.O = weight.size(0);
  if (bias.has_value()) detail::check_bias(x, *bias, op, "bias", p.O);
  p.act = parse_activation(activation, op);
  p.four_d = x.dim() == 4;
  p.channels_last = p.four_d && wants_channels_last(x);
  p.rows = p.four_d ? x.size(0) * x.size(2) * x.size(3) : x.size(0);
  return p;
}

// mnv4_cpu::mean: x [N, C, H, W], float32 / float16 / bfloat16.
struct MeanParams {
  int64_t N, C, HW;
};
inline MeanParams make_mean_params(const at::Tensor& x) {
  constexpr const char* op = "mnv4_cpu::mean";
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D [N, C, H, W]; got ndim ", x.dim());
  detail::check_dtype(x, op);
  return MeanParams{x.size(0), x.size(1), x.size(2) * x.size(3)};
}

// mnv4_cpu::sequence: `program` holds kStepInts ints per step ([kind, a, b, c], codes.h) and at least one
// step; `tensors` holds every step's tensor arguments in order. Checked as a whole before anything runs;
// each step's own arguments are then checked by its op's make_*_params.
inline void check_sequence(at::IntArrayRef program, int64_t n_tensors) {
  constexpr const char* op = "mnv4_cpu::sequence";
  TORCH_CHECK(!program.empty() && program.size() % kStepInts == 0, op, ": program must hold ", kStepInts,
              " ints per step and at least one step; got ", program.size(), " ints");
  int64_t need = 0;
  for (size_t s = 0; s < program.size() / kStepInts; ++s) {
    const int64_t kind = program[s * kStepInts];
    TORCH_CHECK(kind >= 0 && kind < kStepKinds, op, ": program step ", s, ": unknown op code ", kind,
                " (0 conv, 1 pointwise, 2 uib, 3 mqa, 4 mean)");
    need += kStepTensors[kind];
  }
  TORCH_CHECK(n_tensors == need, op, ": the program's steps take ", need, " tensors; got ", n_tensors);
}

// An activation code of a sequence step as the ops' activation string.
inline const char* sequence_activation(int64_t code, int64_t step) {
  TORCH_CHECK(code >= 0 && code <= 2, "mnv4_cpu::sequence: program step ", step,
              ": activation code must be 0 (none), 1 (relu) or 2 (gelu); got ", code);
  switch (static_cast<Activation>(code)) {
    case Activation::Relu: return "relu";
    case Activation::Gelu: return "gelu";
    default: return "none";
  }
}

// tensors[i], a required argument (`what`) of sequence step `step`.
inline const at::Tensor& sequence_required(const c10::optional<at::Tensor>& t, size_t i, int64_t step,
                                           const char* what) {
  TORCH_CHECK(t.has_value() && t->defined(), "mnv4_cpu::sequence: tensors[", i, "] (step ", step, "'s ", what,
              ") must not be None");
  return *t;
}

// The input of a mean step (a global average pool over H and W).
inline void check_sequence_mean(const at::Tensor& h, int64_t step) {
  TORCH_CHECK(h.dim() == 4, "mnv4_cpu::sequence: program step ", step, ": mean needs a 4-D input; got ndim ",
              h.dim());
}

}  // namespace mnv4
