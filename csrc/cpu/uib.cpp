// mnv4::uib on the CPU: one fused pass per UIB block.
//
// Design ("weights as the A matrix", channel-major tiles). The work is split into tasks (image, band of
// output rows), run by at::parallel_for. A task computes its band through the whole block in per-thread
// scratch tiles that stay in L1/L2; the expanded tensor (mid = 2-6x Cin channels) never exists in full:
//   X  input rows the band needs (with the halos of both dw convs), channel-major [Cin][rows*W]:
//      NCHW input is used in place (a plane's rows are contiguous); channels_last input is transposed in.
//   S  start dw (no act)                                  [Cin][e_rows*Ws]      (ExtraDW, ConvNext)
//   E  expand 1x1 + bias + act = GEMM  E = We * S         [mid][e_rows*Ws]
//      (e_rows = the band's rows plus the mid dw's halo rows, recomputed by neighbouring bands)
//   M  mid dw + act (carries the stride)                  [mid][rows*Wo]        (ExtraDW, IB)
//   O  proj 1x1 + bias (+ x) = GEMM  O = Wp * M (+ X)     written straight into an NCHW output, or into a
//      [Cout][rows*Wo] tile transposed into a channels_last output.
// With activations channel-major, a 1x1 conv is out[co][p] = sum_ci W[co][ci] X[ci][p]: a row-major GEMM
// whose A is the torch weight as stored, so nothing is packed or repacked per call (weights up to
// 1024x256 on the 7x7 layers would otherwise be read and written on every batch-1 call). The GEMM
// microkernel (6x16 fp32 register tile on AVX2+FMA / NEON) broadcasts 6 weights and loads 16 pixels per
// k step; the dw conv runs per channel plane, vectorised along the width. Bands are sized so the E tile
// stays within ~256 KB, and there are at least as many tasks as threads (batch 1 uses every thread).
// fp16/bf16 inputs are computed in fp32 (converted on entry) and the result converted back.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../params.h"
#include "kernels/interface/ukernels.h"

namespace mnv4 {
namespace {

using cpu::Act;

Act to_act(Activation a) {
  switch (a) {
    case Activation::Relu: return Act::Relu;
    case Activation::Gelu: return Act::Gelu;
    default: return Act::None;
  }
}

struct Geometry {
  int64_t N, Cin, H, W, mid, Cout, Ho, Wo;
  int64_t Hs, Ws;      // resolution after the start dw (= of the expanded tensor)
  int64_t ks, ss, ps;  // start dw kernel (0 = none), stride, pad
  int64_t km, ms, pm;  // mid dw kernel (0 = none), stride, pad
  bool in_cl, out_cl, residual;
  Act act;
  int64_t bh, nb;  // output rows per band, bands per image
};

// The expanded rows [e0, e1) and the input rows [r0, r1) that output rows [oy0, oy1) need.
inline void band_rows(const Geometry& g, int64_t oy0, int64_t oy1, int64_t& e0, int64_t& e1, int64_t& r0,
                      int64_t& r1) {
  if (g.km) {
    e0 = std::max<int64_t>(0, oy0 * g.ms - g.pm);
    e1 = std::min<int64_t>(g.Hs, (oy1 - 1) * g.ms + g.pm + 1);
  } else {
    e0 = oy0;
    e1 = oy1;
  }
  if (g.ks) {
    r0 = std::max<int64_t>(0, e0 * g.ss - g.ps);
    r1 = std::min<int64_t>(g.H, (e1 - 1) * g.ss + g.ps + 1);
  } else {
    r0 = e0;
    r1 = e1;
  }
}

struct Sizes {
  int64_t x, s, e, m, o, dw;
  int64_t total() const { return x + s + e + m + o + dw; }
};

Sizes scratch_sizes(const Geometry& g) {
  // the largest band: bh output rows with full halos
  const int64_t er = g.km ? std::min(g.Hs, (g.bh - 1) * g.ms + 2 * g.pm + 1) : g.bh;
  const int64_t rr = g.ks ? std::min(g.H, (er - 1) * g.ss + 2 * g.ps + 1) : er;
  Sizes z{};
  z.x = g.in_cl ? g.Cin * rr * g.W : 0;
  z.s = g.ks ? g.Cin * er * g.Ws : 0;
  z.e = g.mid * er * g.Ws;
  z.m = g.km ? g.mid * g.bh * g.Wo : 0;
  z.o = g.out_cl ? g.Cout * g.bh * g.Wo : 0;
  z.dw = std::max(g.ks ? cpu::f32_dwconv_scratch_floats(int(g.ks), int(g.ss), g.W, er) : 0,
                  g.km ? cpu::f32_dwconv_scratch_floats(int(g.km), int(g.ms), g.Ws, g.bh) : 0);
  return z;
}

void plan_bands(Geometry& g, int64_t threads) {
  constexpr int64_t kTileFloats = 64 * 1024;  // the E tile: 256 KB of the 512 KB - 1 MB L2
  int64_t bh = g.Ho;
  auto e_floats = [&](int64_t rows) {
    const int64_t er = g.km ? std::min(g.Hs, (rows - 1) * g.ms + 2 * g.pm + 1) : rows;
    return g.mid * er * g.Ws;
  };
  while (bh > 1 && e_floats(bh) > kTileFloats) bh = (bh + 1) / 2;
  int64_t nb = (g.Ho + bh - 1) / bh;
  if (g.N * nb < threads) nb = std::min(g.Ho, (threads + g.N - 1) / g.N);
  bh = (g.Ho + nb - 1) / nb;  // balance the bands
  g.bh = bh;
  g.nb = (g.Ho + bh - 1) / bh;
}

struct Weights {
  const float *sw, *sb, *ew, *eb, *mw, *mb, *pw, *pb;
};

void run_band(const Geometry& g, const Weights& wt, const float* x, float* out, int64_t n, int64_t b, float* buf,
              const Sizes& z) {
  const cpu::UKernels& uk = cpu::ukernels();
  const int64_t oy0 = b * g.bh, oy1 = std::min(g.Ho, oy0 + g.bh);
  if (oy0 >= oy1) return;
  int64_t e0, e1, r0, r1;
  band_rows(g, oy0, oy1, e0, e1, r0, r1);
  float* xt = buf;
  float* st = xt + z.x;
  float* et = st + z.s;
  float* mt = et + z.e;
  float* ot = mt + z.m;
  float* dws = ot + z.o;

  // X: channel-major input rows [r0, r1)
  const int64_t px = (r1 - r0) * g.W;
  const float* X;
  int64_t x_cs;
  if (g.in_cl) {
    uk.transpose(px, g.Cin, x + (n * g.H + r0) * g.W * g.Cin, g.Cin, xt, px);
    X = xt;
    x_cs = px;
  } else {
    X = x + n * g.Cin * g.H * g.W + r0 * g.W;
    x_cs = g.H * g.W;
  }
  // S: start dw
  const int64_t pe = (e1 - e0) * g.Ws;
  const float* S = X;
  int64_t s_cs = x_cs;
  if (g.ks) {
    uk.dwconv(g.Cin, int(g.ks), int(g.ss), X, x_cs, g.W, r0, g.H, g.W, wt.sw, wt.sb, Act::None, st, pe, g.Ws, e0, e1,
              dws);
    S = st;
    s_cs = pe;
  }
  // E: expand 1x1 + act
  uk.gemm(g.mid, pe, g.Cin, wt.ew, g.Cin, S, s_cs, et, pe, wt.eb, g.act, nullptr, 0);
  // M: mid dw + act
  const int64_t po = (oy1 - oy0) * g.Wo;
  const float* Mp = et;
  int64_t m_cs = pe;
  if (g.km) {
    uk.dwconv(g.mid, int(g.km), int(g.ms), et, pe, g.Ws, e0, g.Hs, g.Ws, wt.mw, wt.mb, g.act, mt, po, g.Wo, oy0, oy1,
              dws);
    Mp = mt;
    m_cs = po;
  }
  // O: proj 1x1 (+ x)
  const float* R = g.residual ? X + (oy0 - r0) * g.W : nullptr;  // residual => stride 1, W == Wo
  if (g.out_cl) {
    uk.gemm(g.Cout, po, g.mid, wt.pw, g.mid, Mp, m_cs, ot, po, wt.pb, Act::None, R, x_cs);
    uk.transpose(g.Cout, po, ot, po, out + (n * g.Ho + oy0) * g.Wo * g.Cout, g.Cout);
  } else {
    const int64_t o_cs = g.Ho * g.Wo;
    uk.gemm(g.Cout, po, g.mid, wt.pw, g.mid, Mp, m_cs, out + n * g.Cout * o_cs + oy0 * g.Wo, o_cs, wt.pb, Act::None,
            R, x_cs);
  }
}

at::Tensor f32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

at::Tensor uib_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& start_dw_w,
                   const c10::optional<at::Tensor>& start_dw_b, const at::Tensor& expand_w, const at::Tensor& expand_b,
                   const c10::optional<at::Tensor>& mid_dw_w, const c10::optional<at::Tensor>& mid_dw_b,
                   const at::Tensor& proj_w, const at::Tensor& proj_b, int64_t stride, bool residual,
                   std::string activation) {
  const UibParams p = make_uib_params(x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w,
                                      proj_b, stride, residual, activation);
  const auto fmt = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (p.batch == 0)
    return at::empty({0, p.out_channels, p.out_height, p.out_width}, x.options().memory_format(fmt));

  Geometry g{};
  g.N = p.batch;
  g.Cin = p.in_channels;
  g.H = p.height;
  g.W = p.width;
  g.mid = p.mid_channels;
  g.Cout = p.out_channels;
  g.Ho = p.out_height;
  g.Wo = p.out_width;
  g.ks = p.start_kernel;
  g.ss = p.start_stride;
  g.ps = g.ks / 2;
  g.km = p.mid_kernel;
  g.ms = p.mid_stride;
  g.pm = g.km / 2;
  g.Hs = conv_out_size(g.H, g.ss);
  g.Ws = conv_out_size(g.W, g.ss);
  g.in_cl = p.channels_last;
  g.out_cl = p.channels_last;
  g.residual = p.residual;
  g.act = to_act(p.activation);
  const int64_t threads = at::get_num_threads();
  plan_bands(g, threads);

  const at::Tensor xf = x.to(at::kFloat).contiguous(fmt);
  at::Tensor sw, sb, mw, mb;
  if (g.ks) sw = f32(*start_dw_w), sb = f32(*start_dw_b);
  if (g.km) mw = f32(*mid_dw_w), mb = f32(*mid_dw_b);
  const at::Tensor ew = f32(expand_w), eb = f32(expand_b), pw = f32(proj_w), pb = f32(proj_b);
  Weights wt{g.ks ? sw.data_ptr<float>() : nullptr, g.ks ? sb.data_ptr<float>() : nullptr, ew.data_ptr<float>(),
             eb.data_ptr<float>(), g.km ? mw.data_ptr<float>() : nullptr, g.km ? mb.data_ptr<float>() : nullptr,
             pw.data_ptr<float>(), pb.data_ptr<float>()};
  at::Tensor out = at::empty({g.N, g.Cout, g.Ho, g.Wo}, x.options().dtype(at::kFloat).memory_format(fmt));
  const float* xp = xf.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const Sizes z = scratch_sizes(g);
  const int64_t tasks = g.N * g.nb;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    // Per-thread scratch, kept between calls (no page faults on the hot path).
    thread_local std::vector<float> buf;
    if (int64_t(buf.size()) < z.total()) buf.resize(z.total());
    for (int64_t t = begin; t < end; ++t) run_band(g, wt, xp, op, t / g.nb, t % g.nb, buf.data(), z);
  });
  if (x.scalar_type() != at::kFloat) out = out.to(x.scalar_type());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mnv4, CPU, m) { m.impl("uib", &uib_cpu); }

// torch.ops.mnv4_cpu.isa(): the microkernel table the CPU ops use ("avx2_fma", "neon" or "scalar"; set
// MNV4_CPU_ISA=scalar|avx2|neon before the first call to force one). For tests and benchmark records.
TORCH_LIBRARY(mnv4_cpu, m) {
  m.def("isa() -> str", [] { return std::string(cpu::ukernels().name); });
}

}  // namespace mnv4
