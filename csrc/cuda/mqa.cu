// mnv4::mqa on CUDA, the host side: checks (params.h), the arguments and the launches. The two kernels,
// what they compute and their tile plans: mqa_kernel.cuh.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "cuda/host.cuh"
#include "cuda/mqa_kernel.cuh"
#include "params.h"

namespace mnv4 {
namespace cuda {
namespace {

at::Tensor mqa_cuda(const at::Tensor& x, const at::Tensor& norm_scale, const at::Tensor& norm_shift,
                    const at::Tensor& q_w, const c10::optional<at::Tensor>& k_dw_w,
                    const c10::optional<at::Tensor>& k_dw_b, const at::Tensor& k_w,
                    const c10::optional<at::Tensor>& v_dw_w, const c10::optional<at::Tensor>& v_dw_b,
                    const at::Tensor& v_w, const at::Tensor& o_w, int64_t num_heads, int64_t kv_stride,
                    bool residual) {
  const MqaParams p = make_mqa_params(x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w,
                                      num_heads, kv_stride, residual);
  TORCH_CHECK(x.is_cuda(), "mnv4::mqa (CUDA): x must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty({p.N, p.Cout, p.H, p.W}, x.options(),
                       p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  TORCH_CHECK(p.C < (1 << 20) && p.H * p.W < (1 << 30) && p.heads * p.dk < (1 << 20) &&
                  p.heads * p.dv < (1 << 20) && p.Cout < (1 << 20),
              "mnv4::mqa (CUDA): a dimension is too large for this kernel; got x ", x.sizes());

  const int device = x.device().index();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  const int64_t limit = max_smem_optin(device);
  const int64_t C = p.C, dk = p.dk, dv = p.dv, M = p.Hk * p.Wk;

  at::Tensor sc = norm_scale.contiguous(), sf = norm_shift.contiguous();
  at::Tensor kdw = contig(k_dw_w), kdb = contig(k_dw_b), vdw = contig(v_dw_w), vdb = contig(v_dw_b);
  at::Tensor qw = q_w.contiguous(), ow = o_w.contiguous();
  at::Tensor kwt = k_w.reshape({dk, C}).t().to(at::kFloat).contiguous();  // [C][dk]
  at::Tensor vwt = v_w.reshape({dv, C}).t().to(at::kFloat).contiguous();  // [C][dv]
  auto f32 = x.options().dtype(at::kFloat);
  at::Tensor kws = at::empty({p.N, M, dk}, f32), vws = at::empty({p.N, M, dv}, f32);

  MqaKvArgs ka{};
  ka.x = x.data_ptr();
  for (int d = 0; d < 4; ++d) ka.xs[d] = x.stride(d);
  ka.scale = sc.data_ptr();
  ka.shift = sf.data_ptr();
  ka.kdw = kdw.defined() ? kdw.data_ptr() : nullptr;
  ka.kdb = kdb.defined() ? kdb.data_ptr() : nullptr;
  ka.vdw = vdw.defined() ? vdw.data_ptr() : nullptr;
  ka.vdb = vdb.defined() ? vdb.data_ptr() : nullptr;
  ka.kwt = kwt.data_ptr<float>();
  ka.vwt = vwt.data_ptr<float>();
  ka.K = kws.data_ptr<float>();
  ka.V = vws.data_ptr<float>();
  ka.c = int(C);
  ka.h = int(p.H);
  ka.w = int(p.W);
  ka.kh = int(p.Hk);
  ka.kw = int(p.Wk);
  ka.m = int(M);
  ka.dk = int(dk);
  ka.dv = int(dv);
  ka.kk = int(p.kk);
  ka.kvs = int(p.kv_stride);
  ka.tp = kv_tile_pixels(M, C);
  const int64_t kv_smem = int64_t(2) * ka.tp * C * 4;
  TORCH_CHECK(kv_smem <= limit, "mnv4::mqa (CUDA): C=", C, " is too large for the K/V kernel's shared memory");
  ka.tiles_per_img = int((M + ka.tp - 1) / ka.tp);

  MqaAttnArgs aa{};
  aa.x = x.data_ptr();
  aa.out = out.data_ptr();
  for (int d = 0; d < 4; ++d) {
    aa.xs[d] = x.stride(d);
    aa.os[d] = out.stride(d);
  }
  aa.scale = sc.data_ptr();
  aa.shift = sf.data_ptr();
  aa.qw = qw.data_ptr();
  aa.ow = ow.data_ptr();
  aa.K = kws.data_ptr<float>();
  aa.V = vws.data_ptr<float>();
  aa.c = int(C);
  aa.h = int(p.H);
  aa.w = int(p.W);
  aa.hw = int(p.H * p.W);
  aa.m = int(M);
  aa.heads = int(p.heads);
  aa.dk = int(dk);
  aa.dv = int(dv);
  aa.qw_n = int(p.heads * dk);
  aa.hdv = int(p.heads * dv);
  aa.cout = int(p.Cout);
  aa.residual = p.residual ? 1 : 0;
  aa.qscale = float(1.0 / std::sqrt(double(dk)));

  dispatch_dtype(x.scalar_type(), "mnv4::mqa", [&](auto tag) {
    using T = decltype(tag);
    TORCH_CHECK(choose_attn_plan<T>(aa, limit), "mnv4::mqa (CUDA): the block does not fit in shared memory (needs ", aa.smem,
                " bytes, the device allows ", limit, "; C=", C, ", heads*dk=", aa.qw_n, ", heads*dv=", aa.hdv, ")");
    const int64_t kv_grid = p.N * int64_t(ka.tiles_per_img), grid = p.N * int64_t(aa.tiles_per_img);
    TORCH_CHECK(kv_grid <= 0x7fffffff && grid <= 0x7fffffff, "mnv4::mqa (CUDA): too many tiles");

    allow_smem<mqa_kv_kernel<T>>(device);
    mqa_kv_kernel<T><<<unsigned(kv_grid), kThreads, size_t(kv_smem), stream>>>(ka);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    allow_smem<mqa_attn_kernel<T>>(device);
    mqa_attn_kernel<T><<<unsigned(grid), kThreads, size_t(aa.smem), stream>>>(aa);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace mnv4

TORCH_LIBRARY_IMPL(mnv4, CUDA, m) { m.impl("mqa", &mnv4::cuda::mqa_cuda); }
