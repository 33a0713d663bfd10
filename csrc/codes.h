// The integer codes of the ops, defined once for all the C++ code: the argument parser (params.h), the CPU
// microkernels (cpu::Act in kernels/interface/ukernels.h is this Activation), mnv4_cpu::sequence's program
// and the CUDA kernels' ACT template argument (cuda/common.cuh). Torch-free, so the microkernels' own build
// (CMakeLists.txt) and nvcc include it too. The Python package defines the same codes once, in
// mnv4_kernels/ops.py (SEQ_*); torch.ops.mnv4_cpu.codes() returns these values, and tests/test_codes.py
// checks that the two agree.
#pragma once

#include <cstdint>

namespace mnv4 {

// The activation after a conv (the ops' `activation` string; an epilogue of the microkernels).
enum class Activation : int {
  None = 0,
  Relu = 1,
  Gelu = 2,  // the exact (erf) form
};

// The kinds of step of an mnv4_cpu::sequence program (csrc/ops.cpp), and the tensors each step takes.
enum class Step : int64_t { Conv = 0, Pointwise = 1, Uib = 2, Mqa = 3, Mean = 4 };
constexpr int64_t kStepKinds = 5;
constexpr int64_t kStepTensors[kStepKinds] = {4, 2, 8, 10, 0};  // by Step
constexpr int64_t kStepInts = 4;                                 // ints per step: [kind, a, b, c]

// A conv step's flags (its 4th int): bits, plus the projection's activation code times kConvProjActScale.
constexpr int64_t kConvResidual = 1;
constexpr int64_t kConvChannelsLast = 2;
constexpr int64_t kConvProjActScale = 4;

}  // namespace mnv4
