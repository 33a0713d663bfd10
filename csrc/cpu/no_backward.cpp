// The Autograd kernels of the CPU-only ops without a backward (mnv4_cpu::conv, pointwise, mean, sequence): the op
// runs below autograd, and where grad mode is on and an input requires grad, its output gets a node that refuses
// the backward ("derivative for mnv4_cpu::<op> is not implemented"). Without them, torch's fallback for custom
// ops let a backward through these ops give their inputs no gradient at all (None, with a deprecation warning
// only).
// mnv4::uib and mnv4::mqa have a backward (mnv4_kernels/ops.py register_autograd).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "cpu_ops.h"

namespace mnv4 {

at::Tensor sequence_cpu(const at::Tensor& x, const c10::List<c10::optional<at::Tensor>>& tensors,
                        at::IntArrayRef program);  // sequence.cpp

namespace {

// The tensors among an op's arguments.
void gather(std::vector<at::Tensor>& v, const at::Tensor& t) {
  if (t.defined()) v.push_back(t);
}
void gather(std::vector<at::Tensor>& v, const c10::optional<at::Tensor>& t) {
  if (t.has_value() && t->defined()) v.push_back(*t);
}
void gather(std::vector<at::Tensor>& v, const c10::List<c10::optional<at::Tensor>>& l) {
  for (const c10::optional<at::Tensor> t : l) gather(v, t);
}
template <class T>
void gather(std::vector<at::Tensor>&, const T&) {}

// The op `name` (kernel signature Fn) below autograd; its output refuses a backward where an input needs one.
template <class Fn>
struct NoBackward;
template <class... Args>
struct NoBackward<at::Tensor(Args...)> {
  template <const char* Name>
  static at::Tensor kernel(Args... args) {
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(Name, "").typed<at::Tensor(Args...)>();
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      out = op.call(args...);
    }
    if (!at::GradMode::is_enabled()) return out;
    std::vector<at::Tensor> in;
    (gather(in, args), ...);
    if (!torch::autograd::compute_requires_grad(in)) return out;
    auto node = c10::make_intrusive<torch::autograd::NotImplemented>(std::string(Name));
    node->set_next_edges(torch::autograd::collect_next_edges(in));
    torch::autograd::set_history(out, node);
    return out;
  }
};

constexpr char kConv[] = "mnv4_cpu::conv", kPointwise[] = "mnv4_cpu::pointwise", kMean[] = "mnv4_cpu::mean",
               kSequence[] = "mnv4_cpu::sequence";

}  // namespace

TORCH_LIBRARY_IMPL(mnv4_cpu, Autograd, m) {
  m.impl("conv", &NoBackward<decltype(conv_cpu)>::kernel<kConv>);
  m.impl("pointwise", &NoBackward<decltype(pointwise_cpu)>::kernel<kPointwise>);
  m.impl("mean", &NoBackward<decltype(mean_cpu)>::kernel<kMean>);
  m.impl("sequence", &NoBackward<decltype(sequence_cpu)>::kernel<kSequence>);
}

}  // namespace mnv4
