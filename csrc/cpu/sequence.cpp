// mnv4_cpu::sequence on the CPU (schema and program format: csrc/ops.cpp; codes: csrc/codes.h): a chain of
// the CPU ops in one call, each step's output the next step's input. A fused MobileNetV4 on the CPU ops
// (mnv4_kernels/model.py, FusedMobileNetV4.forward) runs its stem, every block and its head through it, so a
// pass does not go back to Python and the dispatcher between blocks (benches/forward_cpu.py measures the
// difference). Each step calls the same kernel entry point as its op, so the result is bit-identical to
// calling the ops one by one; except in fp16 where the ops compute it in fp32 (no f16 table with fp16
// arithmetic: kernel_set.h's f16_kernels; each op converts its input to fp32 and its output back): there a chain
// of fp16 x and fp16 constants runs in fp32 from end to end instead, x widened once, each constant through its
// fp32 copy (made once per tensor and cached: derived_constant), the result rounded to fp16 once. That is the
// fp32 chain's speed, and fewer roundings than op by op. Where the ops run fp16 kernels, fp16 steps as bf16 does.
#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../params.h"
#include "cpu_ops.h"
#include "kernel_set.h"
#include "weight_cache.h"

namespace mnv4 {

static_assert(kConvProjActScale == 4, "a conv step's flags hold the projection's activation above two bits");

at::Tensor sequence_cpu(const at::Tensor& x, const c10::List<c10::optional<at::Tensor>>& tensors,
                        at::IntArrayRef program) {
  std::vector<c10::optional<at::Tensor>> t(tensors.begin(), tensors.end());
  check_sequence(program, static_cast<int64_t>(t.size()));
  auto req = [&](size_t i, int64_t step, const char* what) -> const at::Tensor& {
    return sequence_required(t[i], i, step, what);
  };
  // fp16: the chain in fp32 (see the header); mixed dtypes are left to the ops to reject
  const bool f16 = x.scalar_type() == at::kHalf && !f16_kernels() &&
                   std::all_of(t.begin(), t.end(), [](const auto& o) { return !o || o->scalar_type() == at::kHalf; });
  if (f16)
    for (auto& o : t)
      if (o) o = derived_constant(*o, "f32_strided", [&] { return o->to(at::kFloat); });  // keeps o's strides
  at::Tensor h = f16 ? x.to(at::kFloat) : x;
  size_t i = 0;
  for (size_t s = 0; s < program.size() / kStepInts; ++s) {
    const int64_t* r = program.data() + s * kStepInts;
    const int64_t step = static_cast<int64_t>(s);
    switch (static_cast<Step>(r[0])) {
      case Step::Conv:
        h = conv_cpu(h, req(i, step, "weight"), t[i + 1], r[1], sequence_activation(r[2], step), t[i + 2], t[i + 3],
                     (r[3] & kConvResidual) != 0, (r[3] & kConvChannelsLast) != 0,
                     sequence_activation(r[3] >> 2, step));
        break;
      case Step::Pointwise:
        h = pointwise_cpu(h, req(i, step, "weight"), t[i + 1], sequence_activation(r[2], step));
        break;
      case Step::Uib:
        h = uib_cpu(h, t[i], t[i + 1], req(i + 2, step, "expand_w"), req(i + 3, step, "expand_b"), t[i + 4],
                    t[i + 5], req(i + 6, step, "proj_w"), req(i + 7, step, "proj_b"), r[1], r[3] != 0,
                    sequence_activation(r[2], step));
        break;
      case Step::Mqa:
        h = mqa_cpu(h, req(i, step, "norm_scale"), req(i + 1, step, "norm_shift"), req(i + 2, step, "q_w"),
                    t[i + 3], t[i + 4], req(i + 5, step, "k_w"), t[i + 6], t[i + 7], req(i + 8, step, "v_w"),
                    req(i + 9, step, "o_w"), r[1], r[2], r[3] != 0);
        break;
      case Step::Mean:
        check_sequence_mean(h, step);
        h = mean_cpu(h);
        break;
    }
    i += kStepTensors[r[0]];
  }
  return f16 ? h.to(at::kHalf) : h;
}

TORCH_LIBRARY_IMPL(mnv4_cpu, CPU, m) { m.impl("sequence", &sequence_cpu); }

}  // namespace mnv4
