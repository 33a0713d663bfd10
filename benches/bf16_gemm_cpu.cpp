// One-thread rate of the bf16 NHWC GEMM tables against the fp32 kernel on MobileNetV4 1x1 shapes, and the
// register-only peaks (benches/peak.c) measured between them in the same process, so every ratio holds
// under one load. Not part of the library; built and run by benches/bf16_cpu.py (links the CMake build's
// libmnv4_ukernels.a and peak.c built with -DPEAK_NO_MAIN).
//   bf16_gemm_cpu M K N ROUNDS  ->  one JSON object per variant on stdout
// One call = C[M x N] = relu(A[M x K] B[K x N] + bias), B packed once in each table's layout (fp32: the
// weight cache's 32-column slabs; bf16: the table's LpPack), operands hot (the same buffers every call).
// Variants, interleaved round by round (median and best of ROUNDS rounds of ~10 ms each, timed by the thread's
// CPU time, so time slices taken by other processes on a shared machine do not count):
//   fma32_peak, vdpbf16ps_peak, tdpbf16ps_peak: the peak loops (skipped where the CPU lacks them)
//   f32_avx512, f32_avx2_fma: f32_conv_nhwc_7x32__avx512, f32_conv_nhwc_6x16__avx2_fma (the fp32 model's kernel
//     on CPUs with / without AVX-512)
//   bf16_<table>: every bf16 table usable here except scalar and the emulated AMX ones
// Each bf16 result is checked against the fp32 one (max_rel_err: max |bf16 - f32| / max |f32|).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <ctime>
#include <vector>

#include "cpu/kernels/interface/ukernels.h"
#include "cpu/kernels/interface/ukernels_bf16.h"

using namespace mnv4::cpu;

extern "C" {
double bf16_peak_fma32(long iters);
double bf16_peak_dp(long iters);
double bf16_peak_amx(long iters);
}

// This thread's CPU time: a round is not charged for the time slices other processes take on a shared machine.
static double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

int main(int argc, char** argv) {
  if (argc < 5) return 2;
  const int64_t M = std::atoll(argv[1]), K = std::atoll(argv[2]), N = std::atoll(argv[3]);
  const int rounds = std::atoi(argv[4]);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> a(M * K), w(K * N), bias(N), c32(M * N);
  for (auto& x : a) x = bf16_to_f32(f32_to_bf16(d(rng)));
  for (auto& x : w) x = bf16_to_f32(f32_to_bf16(d(rng)));
  for (auto& x : bias) x = d(rng);
  std::vector<bf16_t> a16(M * K);
  for (int64_t i = 0; i < M * K; ++i) a16[i] = f32_to_bf16(a[i]);
  const int64_t off0 = 0;
  const double flops = 2.0 * M * N * K;
  struct V {
    std::string name;
    std::function<void()> call;
    std::vector<double> gflops;
    const std::vector<bf16_t>* out = nullptr;  // a bf16 table's result
    double err = -1;
  };
  std::vector<V> vs;
  // fp32: each table's slabs of conv_nhwc_tile.nr columns, K x nr each (the weight cache's layout); c32 is the
  // first one's result (the reference of max_rel_err)
  const Isa f32_isas[] = {Isa::Avx512, Isa::Avx2Fma};
  std::vector<std::vector<float>> wps, c32s;
  wps.reserve(2);
  c32s.reserve(2);
  for (Isa isa : f32_isas) {
    const UKernels* f32 = ukernels_for(isa);
    if (!f32) continue;
    const int64_t nr = f32->conv_nhwc_tile.nr, slabs = (N + nr - 1) / nr;
    wps.emplace_back(slabs * K * nr, 0.f);
    std::vector<float>& wp = wps.back();
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n) wp[(n / nr) * K * nr + k * nr + n % nr] = w[k * N + n];
    float* cp = vs.empty() ? c32.data() : c32s.emplace_back(M * N).data();
    const float* bp = wp.data();
    vs.push_back({std::string("f32_") + f32->name, [=, &a, &bias] {
                    f32->conv_nhwc(M, N, K, 1, &off0, a.data(), K, bp, nr, K * nr, cp, N, bias.data(), Act::Relu,
                                   nullptr, 0);
                  }, {}});
  }
  if (vs.empty()) {
    std::printf("{\"skipped\": \"no AVX2 / AVX-512F\"}\n");
    return 0;
  }
  std::vector<std::vector<bf16_t>> packs, outs;
  const LpIsa isas[] = {LpIsa::Avx2, LpIsa::Avx512F, LpIsa::Avx512Bf16, LpIsa::Amx};
  packs.reserve(4);
  outs.reserve(4);
  for (LpIsa isa : isas) {
    const LpUKernels<bf16_t>* t = lp_ukernels_for<bf16_t>(isa);
    if (!t) continue;
    packs.emplace_back(lp_packed_size(t->pack, 1, K, N));
    lp_pack(t->pack, 1, K, N, w.data(), N, packs.back().data());
    outs.emplace_back(M * N);
    const bf16_t* bp = packs.back().data();
    bf16_t* cp = outs.back().data();
    const int64_t bss = lp_slab_stride(t->pack, 1, K);
    vs.push_back({std::string("bf16_") + t->name, [=, &a16, &bias] {
                    t->conv_nhwc(M, N, K, 1, &off0, a16.data(), K, bp, bss, cp, N, bias.data(), Act::Relu, nullptr, 0);
                  }, {}, &outs.back()});
  }
  // calls per round: ~10 ms at ~100 GFLOP/s
  const long reps = std::max<long>(3, long(1e9 / flops));
  std::vector<double> pf32, pdp, pamx;
  for (auto& v : vs) v.call();  // warm-up
  for (int r = 0; r < rounds; ++r) {
    pf32.push_back(bf16_peak_fma32(200000));
    pdp.push_back(bf16_peak_dp(200000));
    pamx.push_back(bf16_peak_amx(20000));
    for (auto& v : vs) {
      const double t0 = thread_seconds();
      for (long i = 0; i < reps; ++i) v.call();
      v.gflops.push_back(flops * reps / (thread_seconds() - t0) / 1e9);
    }
  }
  double mx = 0;
  for (float x : c32) mx = std::max(mx, double(std::fabs(x)));
  for (V& v : vs) {
    if (!v.out) continue;
    double e = 0;
    for (int64_t j = 0; j < M * N; ++j) e = std::max(e, std::fabs(double(bf16_to_f32((*v.out)[j])) - c32[j]));
    v.err = e / mx;
  }
  auto med = [](std::vector<double> x) {
    std::sort(x.begin(), x.end());
    return x.empty() ? 0.0 : x[x.size() / 2];
  };
  auto best = [](const std::vector<double>& x) { return x.empty() ? 0.0 : *std::max_element(x.begin(), x.end()); };
  const char* pn[] = {"fma32_peak", "vdpbf16ps_peak", "tdpbf16ps_peak"};
  const std::vector<double>* pv[] = {&pf32, &pdp, &pamx};
  for (int i = 0; i < 3; ++i)
    if (best(*pv[i]) > 0)
      std::printf("{\"variant\": \"%s\", \"gflops_median\": %.2f, \"gflops_best\": %.2f}\n", pn[i], med(*pv[i]),
                  best(*pv[i]));
  for (auto& v : vs)
    std::printf("{\"variant\": \"%s\", \"gflops_median\": %.2f, \"gflops_best\": %.2f, \"reps\": %ld%s}\n",
                v.name.c_str(), med(v.gflops), best(v.gflops), reps,
                v.err >= 0 ? (", \"max_rel_err\": " + std::to_string(v.err)).c_str() : "");
  return 0;
}
