// mnv4_cpu::pointwise: a 1x1 convolution (or a linear layer) + bias + activation on the CPU, through the
// NHWC pointwise microkernel (kernels/interface/ukernels.h). The fused model runs its non-UIB 1x1 convs
// (ConvBnAct 1x1, the FusedIB projection), the head's conv_head + norm_head and the classifier through it:
// channels_last activations in place, the weight as [Cin][Cout]: packed once per weight tensor into the
// kernel's column slabs and cached (weight_cache.h); a weight that cannot be cached (an inference tensor)
// read in place when stored with the output channel innermost (mnv4_kernels.ops.channels_innermost), else
// through a transposed copy per call. One parallel region per call. A CPU-only helper op, not part of the
// mnv4 op contract.
//
//   x [N, C] -> [N, O]      or      x [N, C, H, W] -> [N, O, H, W] (output layout follows x, as for uib)
//   y = act(x W^T + bias);  weight [O, C] or [O, C, 1, 1]; bias [O] or None; activation relu|gelu|none.
// bf16 x runs the bf16 kernels through the same code (KernelSet<E>, kernel_set.h): bf16 in and out, the weight
// packed in bf16, fp32 bias and sums; fp16 x runs in fp32.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "../params.h"
#include "cpu_ops.h"
#include "kernel_set.h"
#include "kernels/interface/ukernels.h"
#include "weight_cache.h"

namespace mnv4 {
namespace {

// The op on element type E (float, cpu::bf16_t or cpu::f16_t): the result in E (channels_last when 4-D).
template <class E>
at::Tensor pointwise_run(const PointwiseParams& pp, const at::Tensor& x, const at::Tensor& weight,
                         const c10::optional<at::Tensor>& bias) {
  using KS = KernelSet<E>;
  const int64_t C = pp.C, O = pp.O, P = pp.rows;  // P: pixels (rows)
  const bool four_d = pp.four_d;
  at::Tensor out = four_d ? at::empty({x.size(0), O, x.size(2), x.size(3)},
                                      x.options().dtype(KS::dtype).memory_format(at::MemoryFormat::ChannelsLast))
                          : at::empty({x.size(0), O}, x.options().dtype(KS::dtype));
  if (P > 0 && O > 0) {
    // rows = pixels: channels_last (or [N, C]) is [P][C] with unit channel stride
    const at::Tensor xf = four_d ? x.to(KS::dtype).contiguous(at::MemoryFormat::ChannelsLast)
                                 : x.to(KS::dtype).contiguous();
    // the weight as [C][O]: a view of a weight stored output-channel innermost, else a transposed copy
    auto make_wt = [&] {
      at::Tensor t = weight.to(at::kFloat).reshape({O, C}).t();
      return t.is_contiguous() ? t : t.contiguous();
    };
    // fp32 bias (a bf16 model's converted once: fp32_constant)
    const at::Tensor bf = bias.has_value()
                              ? fp32_constant(*bias, "f32", [&] { return bias->to(at::kFloat).contiguous(); })
                              : at::Tensor();
    const E* xp = KS::data(xf);
    const float* bp = bias.has_value() ? bf.data_ptr<float>() : nullptr;
    E* op = KS::data(out);
    const cpu::Act a = pp.act;
    const KS ks;
    // The weight packed in column slabs, cached per weight tensor (weight_cache.h), else read in place (fp32)
    // or packed for the call (bf16).
    const int64_t slab = ks.nr();
    const auto wo = ks.operand(weight, 1, C, O, make_wt);
    const auto& B = wo.mat;
    // Tasks: blocks of pixels when there are enough of them and more pixels than output channels (the
    // weight slab stays in L1 across a block); else blocks of whole slabs of output channels, which for a
    // few rows (a batch-1 head: matrix-vector products, bound by reading the weight from DRAM) stream each
    // thread's slabs as one contiguous run; except for a few rows from a weight read in place (not
    // cacheable: an inference tensor) or with too few output channels for the threads, see below.
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t pblk = 48;  // pixel rows per task
    // fp32 only: its partial sums are fp32, and the bf16 kernels write only bf16 (bf16 takes the blocks below)
    if constexpr (std::is_same_v<E, float>) {
      if (P <= 4 && C >= 64 && (!B.packed || O < 16 * threads)) {
        const cpu::UKernels& uk = ks.uk;
        // Column blocks of a row-major [C][O] weight step one page per weight row, where the prefetchers do not
        // follow, and too few output channels leave threads idle. Instead each task streams
        // a contiguous block of rows, 32 rows per kernel call, accumulating into its own partial sums (the
        // kernel's in-place residual); then out = act(bias + sum of the partials): a K = T product with a
        // ones vector, so the activation is the kernel's vectorised one. (A packed weight with so few output
        // channels is read through its [C][O] form: a view, or a copy of a small matrix.)
        const at::Tensor kn = B.packed ? make_wt() : at::Tensor();
        const float* wp = B.packed ? kn.data_ptr<float>() : B.plain;
        const int64_t T = std::min<int64_t>(threads, C / 32);
        const int64_t kc = (C + T - 1) / T;
        std::vector<float> part(static_cast<size_t>(T * P * O), 0.f), ones(static_cast<size_t>(T), 1.f);
        float* pp = part.data();
        at::parallel_for(0, T, 1, [&](int64_t b, int64_t e) {
          for (int64_t t = b; t < e; ++t) {
            float* pt = pp + t * P * O;
            for (int64_t k = t * kc; k < std::min(C, (t + 1) * kc); k += 32) {
              const int64_t kn = std::min<int64_t>(32, std::min(C, (t + 1) * kc) - k);
              uk.pwconv_nhwc(P, O, kn, xp + k, C, wp + k * O, O, slab, pt, O, nullptr, cpu::Act::None, pt, O);
            }
          }
        });
        for (int64_t q = 0; q < P; ++q)
          uk.pwconv_nhwc(1, O, T, ones.data(), T, pp + q * O, P * O, slab, op + q * O, O, bp, a, nullptr, 0);
        return out;
      }
    }
    if ((P >= pblk * threads && P >= O) || O < 16 * threads) {
      // Pixel blocks re-read the whole weight per block, channel blocks the whole x per block: split the
      // larger operand.
      at::parallel_for(0, (P + pblk - 1) / pblk, 1, [&](int64_t b, int64_t e) {
        const int64_t p0 = b * pblk, p1 = std::min(P, e * pblk);
        ks.gemm(p1 - p0, O, C, xp + p0 * C, C, B, 0, op + p0 * O, O, bp, a, nullptr, 0);
      });
    } else {  // blocks of whole slabs of output channels
      const int64_t oblk = std::max<int64_t>(16, slab);
      at::parallel_for(0, (O + oblk - 1) / oblk, 1, [&](int64_t b, int64_t e) {
        const int64_t o0 = b * oblk, o1 = std::min(O, e * oblk);
        ks.gemm(P, o1 - o0, C, xp, C, B, o0, op + o0, O, bp ? bp + o0 : nullptr, a, nullptr, 0);
      });
    }
  }
  return out;
}

}  // namespace

at::Tensor pointwise_cpu(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                         std::string activation) {
  const PointwiseParams pp = make_pointwise_params(x, weight, bias, activation);
  const auto dt = x.scalar_type();
  at::Tensor out = with_kernel_set<0>(
      dt, [&](auto ks) { return pointwise_run<typename decltype(ks)::Elem>(pp, x, weight, bias); });
  // NCHW result: a fresh contiguous tensor (out may already count as contiguous when O == 1, H*W == 1 or N == 0,
  // but with other strides than the fake kernel's)
  if (pp.four_d && !pp.channels_last)
    out = at::empty(out.sizes(), out.options().memory_format(at::MemoryFormat::Contiguous)).copy_(out);
  return out.scalar_type() == dt ? out : out.to(dt);
}

TORCH_LIBRARY_IMPL(mnv4_cpu, CPU, m) { m.impl("pointwise", &pointwise_cpu); }

}  // namespace mnv4
