// The exp2 / column-softmax table that goes with the GEMM table ukernels() uses (interface/dispatch.cpp
// picks that one: CPU features, MNV4_CPU_ISA), so one switch selects every MQA microkernel.
#include "softmax.h"

namespace mnv4 {
namespace cpu {

static const SoftmaxUKernels kScalarSoftmax{Isa::Scalar, "scalar", f32_softmax_cols__scalar, f32_exp2__scalar};
#if defined(__x86_64__) || defined(_M_X64)
static const SoftmaxUKernels kAvx2Softmax{Isa::Avx2Fma, "avx2_fma", f32_softmax_cols__avx2_fma, f32_exp2__avx2_fma};
#endif
#if defined(__aarch64__)
static const SoftmaxUKernels kNeonSoftmax{Isa::Neon, "neon", f32_softmax_cols__neon, f32_exp2__neon};
#endif

const SoftmaxUKernels* softmax_ukernels_for(Isa isa) {
  if (!ukernels_for(isa)) return nullptr;  // same availability rule as the GEMM table
  switch (isa) {
    case Isa::Scalar:
      return &kScalarSoftmax;
    case Isa::Avx2Fma:
    case Isa::Avx512:  // no AVX-512 softmax: the AVX2 one
#if defined(__x86_64__) || defined(_M_X64)
      return &kAvx2Softmax;
#endif
      return nullptr;
    case Isa::Neon:
#if defined(__aarch64__)
      return &kNeonSoftmax;
#endif
      return nullptr;
  }
  return nullptr;
}

const SoftmaxUKernels& softmax_ukernels() {
  const SoftmaxUKernels* k = softmax_ukernels_for(ukernels().isa);
  return k ? *k : kScalarSoftmax;
}

}  // namespace cpu
}  // namespace mnv4
