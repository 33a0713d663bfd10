// The one place that declares the operators: the public mnv4 ops and the CPU-only internal mnv4_cpu ops.
// Argument checks: csrc/params.h. Kernels live in csrc/cpu (CPU), csrc/cuda (CUDA) and mnv4_kernels/triton
// (the *_triton ops, registered from Python); fake kernels in mnv4_kernels/ops.py.
#include <Python.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "codes.h"
#include "cpu/kernels/interface/ukernels.h"
#include "cpu/kernels/interface/ukernels_bf16.h"
#include "cpu/kernel_set.h"
#include "cpu/weight_cache.h"

// Importing mnv4_kernels._C from Python registers the library; the module itself has no functions.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(mnv4, m) {
  // Universal Inverted Bottleneck with BatchNorm folded into every conv (weight + bias), layer scale folded
  // into the projection:
  //   start dw k x k (no act) -> expand 1x1 + act -> mid dw k x k + act -> proj 1x1 -> (+ x if residual).
  // x [N,Cin,H,W]; start_dw_w [Cin,1,k,k]; expand_w [mid,Cin,1,1]; mid_dw_w [mid,1,k,k]; proj_w [Cout,mid,1,1].
  // The stride sits on the mid dw when present, else on the start dw. Same padding k//2. Which dw weights
  // are given selects the form: ExtraDW (both), IB (mid), ConvNext (start), FFN (neither).
  // activation: "relu" | "gelu" (exact, erf) | "none". The output's memory format follows x's.
  m.def(
      "uib(Tensor x, Tensor? start_dw_w, Tensor? start_dw_b, Tensor expand_w, Tensor expand_b, "
      "Tensor? mid_dw_w, Tensor? mid_dw_b, Tensor proj_w, Tensor proj_b, "
      "int stride=1, bool residual=False, str activation=\"relu\") -> Tensor");

  // Mobile MQA (one shared K head and one shared V head for all query heads):
  //   xn = x * norm_scale + norm_shift (the pre-norm BatchNorm as a per-channel affine)
  //   q = q_w xn [h*dk]; k = k_w dw_k(xn) [dk]; v = v_w dw_v(xn) [dv]  (dw: k x k, stride kv_stride, + bias;
  //   identity when the dw weight is absent, which needs kv_stride == 1)
  //   o = softmax(q k^T * dk^-0.5) v per head; out = o_w o (+ x if residual). Channels are head-major.
  m.def(
      "mqa(Tensor x, Tensor norm_scale, Tensor norm_shift, Tensor q_w, "
      "Tensor? k_dw_w, Tensor? k_dw_b, Tensor k_w, Tensor? v_dw_w, Tensor? v_dw_b, Tensor v_w, "
      "Tensor o_w, int num_heads, int kv_stride=1, bool residual=True) -> Tensor");
}

namespace mnv4 {

// Internal ops of the CPU backend: the fused model's non-UIB layers and its whole forward pass, and what the
// tests and benchmarks need to know about the build. Not part of the public op contract.
TORCH_LIBRARY(mnv4_cpu, m) {
  // A dense k x k conv + bias + act, optionally followed by a 1x1 projection (+ bias, + act) and the
  // residual, in one pass (the stem, `cn` convs and FusedIB blocks):
  //   h = act(conv2d(x, weight, bias, stride, padding = k // 2))     weight [O, C, k, k], k odd
  //   y = h without proj_weight, else proj_act(conv2d(h, proj_weight, proj_bias))    proj_weight [P, O, 1, 1]
  //   y = y + x with residual (stride 1, y's channels == C)
  // The output's memory format follows x's, or is channels_last with channels_last=True.
  m.def(
      "conv(Tensor x, Tensor weight, Tensor? bias=None, int stride=1, str activation=\"none\", "
      "Tensor? proj_weight=None, Tensor? proj_bias=None, bool residual=False, bool channels_last=False, "
      "str proj_activation=\"none\") -> Tensor");

  // A 1x1 conv or a linear layer: y = act(x W^T + bias); x [N, C] -> [N, O] or [N, C, H, W] -> [N, O, H, W]
  // (the output's memory format follows x's); weight [O, C] or [O, C, 1, 1]; bias [O] or None.
  m.def("pointwise(Tensor x, Tensor weight, Tensor? bias=None, str activation=\"none\") -> Tensor");

  // The global average pool of the heads: x [N, C, H, W] -> [N, C], each mean summed in fp32 in pixel order
  // and rounded once to x's dtype.
  m.def("mean(Tensor x) -> Tensor");

  // A chain of the CPU ops in one call, each step's output the next step's input. program: 4 ints per step,
  // [kind, a, b, c] (codes: csrc/codes.h); tensors: every step's tensor arguments in order (None = absent):
  //   kind 0 conv       a stride, b activation, c flags (1 residual, 2 channels_last,   weight, bias, proj_weight,
  //                     4 x the projection's activation)                               proj_bias
  //   kind 1 pointwise  b activation                                                   weight, bias
  //   kind 2 uib        a stride, b activation, c residual                             the 8 of mnv4::uib
  //   kind 3 mqa        a num_heads, b kv_stride, c residual                           the 10 of mnv4::mqa
  //   kind 4 mean       mnv4_cpu::mean, [N, C, H, W] -> [N, C]                       none
  //   activation: 0 none, 1 relu, 2 gelu (exact).
  m.def("sequence(Tensor x, Tensor?[] tensors, int[] program) -> Tensor");

  // The microkernel table the CPU ops use ("scalar", "avx2_fma", "avx512" or "neon"; MNV4_CPU_ISA, read
  // before the first call, forces one). For tests and benchmark records.
  m.def("isa() -> str", [] { return std::string(cpu::ukernels().name); });
  // The bf16 microkernel table the CPU ops use on bf16 activations (ukernels_bf16.h: "avx512bf16", "avx512f",
  // "amx", "scalar", ...; MNV4_CPU_LP_ISA forces one). For tests and benchmark records.
  m.def("lp_isa() -> str", [] { return std::string(cpu::lp_ukernels<cpu::bf16_t>().name); });
  // Whether that table converts on load (cpu::lp_convert_on_load): the bf16 ops then keep their
  // intermediates in fp32 and round fewer times (csrc/cpu/uib.cpp). For tests and benchmark records.
  m.def("lp_convert_on_load() -> bool",
        [] { return cpu::lp_convert_on_load(cpu::lp_ukernels<cpu::bf16_t>().isa); });
  // What the CPU ops compute fp16 activations with: the f16 table's name where it has fp16 arithmetic
  // ("neon_fp16", "avx512fp16"; an emulation when MNV4_CPU_LP_ISA forces it, in tests), else "fp32" (converted at each
  // op's entry and exit: csrc/cpu/kernel_set.h f16_kernels). For tests and benchmark records.
  m.def("f16_isa() -> str",
        [] { return std::string(f16_kernels() ? cpu::lp_ukernels<cpu::f16_t>().name : "fp32"); });

  // Entries of the packed-weight cache (csrc/cpu/weight_cache.h) whose weights are still alive. For tests.
  m.def("packed_cache_entries() -> int", [] { return packed_cache_entries(); });

  // The integer codes of csrc/codes.h as (names, values), so tests can check that mnv4_kernels/ops.py
  // defines the same ones.
  m.def("codes() -> (str[], int[])", [] {
    std::vector<std::string> names = {"activation.none", "activation.relu", "activation.gelu",
                                      "step.conv",       "step.pointwise",  "step.uib",
                                      "step.mqa",        "step.mean",       "step_ints",
                                      "conv_flag.residual", "conv_flag.channels_last", "conv_flag.proj_act_scale"};
    std::vector<int64_t> values = {int64_t(Activation::None), int64_t(Activation::Relu), int64_t(Activation::Gelu),
                                   int64_t(Step::Conv),       int64_t(Step::Pointwise),  int64_t(Step::Uib),
                                   int64_t(Step::Mqa),        int64_t(Step::Mean),       kStepInts,
                                   kConvResidual,             kConvChannelsLast,         kConvProjActScale};
    const char* kinds[kStepKinds] = {"conv", "pointwise", "uib", "mqa", "mean"};
    for (int64_t k = 0; k < kStepKinds; ++k) {
      names.push_back(std::string("step_tensors.") + kinds[k]);
      values.push_back(kStepTensors[k]);
    }
    return std::make_tuple(names, values);
  });
}

}  // namespace mnv4
