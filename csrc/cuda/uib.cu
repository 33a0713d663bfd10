// mnv4::uib on CUDA, the host side: checks (params.h), the arguments and the launch. The kernel, what it
// computes and its tile plan: uib_kernel.cuh.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/host.cuh"
#include "cuda/uib_kernel.cuh"
#include "params.h"

namespace mnv4 {
namespace cuda {
namespace {

template <typename T>
void launch_uib(UibArgs a, Activation act, int device, cudaStream_t stream) {
  const int64_t limit = max_smem_optin(device);
  TORCH_CHECK(choose_uib_plan<T>(a, limit),
              "mnv4::uib (CUDA): the block does not fit in shared memory even with a 1x1 output tile (needs ", a.smem,
              " bytes, the device allows ", limit, "; Cin=", a.cin, ", Cout=", a.cout, ")");
  const int64_t grid = int64_t(a.batch) * a.tiles_per_img;
  TORCH_CHECK(grid <= 0x7fffffff, "mnv4::uib (CUDA): too many tiles (", grid, ")");
  dispatch_act(act, [&](auto act_c) {
    constexpr int ACT = decltype(act_c)::value;
    allow_smem<uib_kernel<T, ACT>>(device);
    uib_kernel<T, ACT><<<unsigned(grid), kThreads, size_t(a.smem), stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor uib_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& start_dw_w,
                    const c10::optional<at::Tensor>& start_dw_b, const at::Tensor& expand_w, const at::Tensor& expand_b,
                    const c10::optional<at::Tensor>& mid_dw_w, const c10::optional<at::Tensor>& mid_dw_b,
                    const at::Tensor& proj_w, const at::Tensor& proj_b, int64_t stride, bool residual,
                    std::string activation) {
  const UibParams p = make_uib_params(x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w,
                                      proj_b, stride, residual, activation);
  TORCH_CHECK(x.is_cuda(), "mnv4::uib (CUDA): x must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty({p.N, p.Cout, p.Ho, p.Wo}, x.options(),
                       p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  TORCH_CHECK(p.Cin < (1 << 20) && p.mid < (1 << 20) && p.Cout < (1 << 20) &&
                  p.H < (1 << 20) && p.W < (1 << 20),
              "mnv4::uib (CUDA): a dimension is too large for this kernel; got x ", x.sizes(), ", mid ",
              p.mid, ", Cout ", p.Cout);

  // Weights as dense arrays: dw [C][k*k], expand [mid][Cin], proj [Cout][mid], biases [C].
  at::Tensor sw = contig(start_dw_w), sb = contig(start_dw_b), mw = contig(mid_dw_w), mb = contig(mid_dw_b);
  at::Tensor ew = expand_w.contiguous(), eb = expand_b.contiguous(), pw = proj_w.contiguous(), pb = proj_b.contiguous();

  UibArgs a{};
  a.x = x.data_ptr();
  a.out = out.data_ptr();
  a.sw = sw.defined() ? sw.data_ptr() : nullptr;
  a.sb = sb.defined() ? sb.data_ptr() : nullptr;
  a.mw = mw.defined() ? mw.data_ptr() : nullptr;
  a.mb = mb.defined() ? mb.data_ptr() : nullptr;
  a.ew = ew.data_ptr();
  a.eb = eb.data_ptr();
  a.pw = pw.data_ptr();
  a.pb = pb.data_ptr();
  for (int d = 0; d < 4; ++d) {
    a.xs[d] = x.stride(d);
    a.os[d] = out.stride(d);
  }
  a.batch = int(p.N);
  a.cin = int(p.Cin);
  a.h = int(p.H);
  a.w = int(p.W);
  a.mid = int(p.mid);
  a.cout = int(p.Cout);
  a.oh = int(p.Ho);
  a.ow = int(p.Wo);
  a.ks = int(p.ks);
  a.km = int(p.km);
  a.ss = int(p.ss);
  a.s = int(p.stride);
  a.residual = p.residual ? 1 : 0;
  a.eg_h = a.km ? a.h : a.oh;
  a.eg_w = a.km ? a.w : a.ow;

  const int device = x.device().index();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  dispatch_dtype(x.scalar_type(), "mnv4::uib", [&](auto tag) {
    using T = decltype(tag);
    launch_uib<T>(a, p.act, device, stream);
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace mnv4

TORCH_LIBRARY_IMPL(mnv4, CUDA, m) { m.impl("uib", &mnv4::cuda::uib_cuda); }
