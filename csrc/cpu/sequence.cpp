// mnv4_cpu::sequence: a chain of the CPU ops in one call, each step's output the next step's input. A fused
// MobileNetV4 on the CPU ops (mnv4_kernels/model.py, FusedMobileNetV4.forward) runs its stem, every block and
// its head through it: ~27 op calls per pass without going back to Python and the dispatcher between them
// (against the Python loop over the blocks: benches/forward_cpu.py, results/forward-*.json). Each step calls
// the same kernel entry point as its op, so the result is bit-identical to calling the ops one by one.
//
//   program: 4 ints per step, [op, a, b, c]; tensors: every step's tensor arguments in order (None = absent)
//     op 0 conv       a stride, b activation, c flags (1 residual, 2 channels_last,   weight, bias, proj_weight,
//                     4 x the projection's activation code)                          proj_bias (conv.cpp)
//     op 1 pointwise  b activation                                                   weight, bias
//     op 2 uib        a stride, b activation, c residual                             the 8 of mnv4::uib
//     op 3 mqa        a num_heads, b kv_stride, c residual                           the 10 of mnv4::mqa
//     op 4 mean       over H and W, [N, C, H, W] -> [N, C] (a global average pool)   none
//   activation: 0 none, 1 relu, 2 gelu (exact).
#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/mean.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "cpu_ops.h"

namespace mnv4 {
namespace {

constexpr const char* kOp = "mnv4_cpu::sequence";

enum Step : int64_t { kConv = 0, kPointwise = 1, kUib = 2, kMqa = 3, kMean = 4 };
constexpr int64_t kArgs[] = {4, 2, 8, 10, 0};  // tensors per step, by op
constexpr int64_t kRecord = 4;                 // ints per step

std::string activation_name(int64_t code, int64_t step) {
  TORCH_CHECK(code >= 0 && code <= 2, kOp, ": program step ", step, ": activation code must be 0 (none), 1 (relu) or ",
              "2 (gelu); got ", code);
  return code == 1 ? "relu" : code == 2 ? "gelu" : "none";
}

at::Tensor sequence_cpu(const at::Tensor& x, const c10::List<c10::optional<at::Tensor>>& tensors,
                        at::IntArrayRef program) {
  TORCH_CHECK(!program.empty() && program.size() % kRecord == 0, kOp, ": program must hold ", kRecord,
              " ints per step and at least one step; got ", program.size(), " ints");
  // Check the whole program against the tensor list before running anything.
  std::vector<c10::optional<at::Tensor>> t(tensors.begin(), tensors.end());
  int64_t need = 0;
  for (size_t s = 0; s < program.size() / kRecord; ++s) {
    const int64_t op = program[s * kRecord];
    TORCH_CHECK(op >= kConv && op <= kMean, kOp, ": program step ", s, ": unknown op code ", op,
                " (0 conv, 1 pointwise, 2 uib, 3 mqa, 4 mean)");
    need += kArgs[op];
  }
  TORCH_CHECK(static_cast<int64_t>(t.size()) == need, kOp, ": the program's steps take ", need,
              " tensors; got ", t.size());
  // tensors[i], which must be given
  auto req = [&](size_t i, int64_t step, const char* what) -> const at::Tensor& {
    TORCH_CHECK(t[i].has_value() && t[i]->defined(), kOp, ": tensors[", i, "] (step ", step, "'s ", what,
                ") must not be None");
    return *t[i];
  };
  at::Tensor h = x;
  size_t i = 0;
  for (size_t s = 0; s < program.size() / kRecord; ++s) {
    const int64_t* r = program.data() + s * kRecord;
    const int64_t step = static_cast<int64_t>(s);
    switch (r[0]) {
      case kConv:
        h = conv_cpu(h, req(i, step, "weight"), t[i + 1], r[1], activation_name(r[2], step), t[i + 2], t[i + 3],
                     (r[3] & 1) != 0, (r[3] & 2) != 0, activation_name(r[3] >> 2, step));
        break;
      case kPointwise:
        h = pointwise_cpu(h, req(i, step, "weight"), t[i + 1], activation_name(r[2], step));
        break;
      case kUib:
        h = uib_cpu(h, t[i], t[i + 1], req(i + 2, step, "expand_w"), req(i + 3, step, "expand_b"), t[i + 4],
                    t[i + 5], req(i + 6, step, "proj_w"), req(i + 7, step, "proj_b"), r[1], r[3] != 0,
                    activation_name(r[2], step));
        break;
      case kMqa:
        h = mqa_cpu(h, req(i, step, "norm_scale"), req(i + 1, step, "norm_shift"), req(i + 2, step, "q_w"),
                    t[i + 3], t[i + 4], req(i + 5, step, "k_w"), t[i + 6], t[i + 7], req(i + 8, step, "v_w"),
                    req(i + 9, step, "o_w"), r[1], r[2], r[3] != 0);
        break;
      case kMean:
        TORCH_CHECK(h.dim() == 4, kOp, ": program step ", step, ": mean needs a 4-D input; got ndim ", h.dim());
        h = at::mean(h, {2, 3});
        break;
    }
    i += kArgs[r[0]];
  }
  return h;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mnv4_cpu, m) {
  m.def("sequence(Tensor x, Tensor?[] tensors, int[] program) -> Tensor");
}

TORCH_LIBRARY_IMPL(mnv4_cpu, CPU, m) { m.impl("sequence", &sequence_cpu); }

}  // namespace mnv4
