// mnv4_cpu::mean on the CPU: the global average pool of the fused models' heads, [N, C, H, W] -> [N, C].
// Per image and channel, the fp32 sum of the H * W values in pixel order, divided by H * W and rounded once
// to x's dtype (an empty plane gives NaN, as torch's mean). Serial per image: the pool reads a few tens of
// KB per image, less than a parallel region's fork and join cost; images are split over the threads.
// It replaces torch's mean in the heads: on a batch-1 bf16 plane, torch's parallel reduction costs several
// times the pool itself (benches/kernels_cpu.py, section 6).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../params.h"
#include "cpu_ops.h"

namespace mnv4 {
namespace {

template <class E>
void mean_images(const E* x, E* out, int64_t n0, int64_t n1, int64_t C, int64_t HW, bool channels_last) {
  std::vector<float> acc(static_cast<size_t>(C));
  const float start = HW == 0 ? std::numeric_limits<float>::quiet_NaN() : 0.f;  // 0 / 0 as torch: NaN
  for (int64_t n = n0; n < n1; ++n) {
    const E* xi = x + n * C * HW;
    std::fill(acc.begin(), acc.end(), start);
    if (channels_last) {  // pixel-major: one row of C channels per pixel
      for (int64_t p = 0; p < HW; ++p) {
        const E* row = xi + p * C;
        for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<float>(row[c]);
      }
    } else {  // channel-major: one plane of H * W pixels per channel
      for (int64_t c = 0; c < C; ++c) {
        const E* plane = xi + c * HW;
        float s = acc[c];
        for (int64_t p = 0; p < HW; ++p) s += static_cast<float>(plane[p]);
        acc[c] = s;
      }
    }
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = static_cast<E>(acc[c] / static_cast<float>(HW));
  }
}

}  // namespace

at::Tensor mean_cpu(const at::Tensor& x) {
  const MeanParams mp = make_mean_params(x);
  at::Tensor out = at::empty({mp.N, mp.C}, x.options());
  if (mp.N * mp.C == 0) return out;
  const bool cl = mp.HW > 1 && mp.C > 1 && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor xc = cl ? x : x.contiguous();
  // images per task: at least ~64 K values, so a batch-1 pool runs on the calling thread alone
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, mp.C * mp.HW));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "mnv4_cpu::mean", [&] {
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, mp.N, grain, [&](int64_t n0, int64_t n1) { mean_images(xp, op, n0, n1, mp.C, mp.HW, cl); });
  });
  return out;
}

TORCH_LIBRARY_IMPL(mnv4_cpu, CPU, m) { m.impl("mean", &mean_cpu); }

}  // namespace mnv4
