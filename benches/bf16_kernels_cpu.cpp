// One-thread rate of the bf16 (and fp16-arithmetic f16) tables against the fp32 kernels on MobileNetV4 shapes,
// NHWC 1x1 GEMMs and depthwise convs, and the register-only peaks (benches/peak.c) measured between them in the
// same process, so every ratio holds under one load. Not part of the library; built and run by
// benches/bf16_cpu.py (links the CMake build's libmnv4_ukernels.a and peak.c built with -DPEAK_NO_MAIN).
//   bf16_kernels_cpu gemm M K N ROUNDS     ->  one JSON object per variant on stdout
//   bf16_kernels_cpu dw C k s H W ROUNDS
// gemm: C[M x N] = relu(A[M x K] B[K x N] + bias), B packed once in each table's layout (fp32: the weight
// cache's 32-column slabs; bf16: the table's LpPack). dw: out = relu(bias + depthwise k x k, stride s, zero
// padding k/2) over an H x W x C image, pixels at the strides of the UIB's scratch tiles (an odd number of
// 64-byte lines, uib.cpp tile_stride), fp32 taps. Operands hot (the same buffers every call).
// Variants, interleaved round by round (median and best of ROUNDS rounds of ~10 ms each, timed by the thread's
// CPU time, so time slices taken by other processes on a shared machine do not count):
//   fma32_peak, vdpbf16ps_peak, tdpbf16ps_peak, vfmadd231ph_peak: the peak loops (skipped where the CPU lacks
//     them)
//   f32_avx512, f32_avx2_fma: the fp32 model's kernels on CPUs with / without AVX-512 (gemm:
//     f32_conv_nhwc_7x32__avx512, f32_conv_nhwc_6x16__avx2_fma; dw: each table's dwconv_nhwc)
//   bf16_<table>: every bf16 table usable here except scalar and the emulated AMX ones
//   f16_<table>: the f16 tables with fp16 arithmetic usable here (avx512fp16, neon_fp16), operands rounded to fp16
// Each bf16 / f16 result is checked against the first fp32 one (max_rel_err: max |got - f32| / max |f32|).
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
double bf16_peak_ph(long iters);
}

// The tables timed: bf16 (all but scalar and the emulations), f16 with fp16 arithmetic (the ones the ops compute
// fp16 on: kernel_set.h f16_kernels).
static const LpIsa kBf16Isas[] = {LpIsa::Avx2, LpIsa::Avx512F, LpIsa::Avx512Bf16, LpIsa::Amx};
static const LpIsa kF16Isas[] = {LpIsa::Avx512Fp16, LpIsa::NeonFp16};

// This thread's CPU time: a round is not charged for the time slices other processes take on a shared machine.
static double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

struct Variant {
  std::string name;
  std::function<void()> call;
  std::vector<double> gflops;
  std::function<double(int64_t)> at;  // element j of the result, in packed order
  bool lp = false;  // a bf16 / f16 variant: its error against the first fp32 one is recorded
  double err = -1;
};

// One element type's GEMM variants: each table of `isas` usable here, its packed weight and output kept for the
// process's life (the variants' calls point into them).
template <class E, size_t NI>
static void lp_gemm_variants(const LpIsa (&isas)[NI], const char* prefix, int64_t M, int64_t K, int64_t N,
                             const std::vector<E>& a, const std::vector<float>& w, const std::vector<float>& bias,
                             std::vector<Variant>& vs) {
  static std::vector<std::vector<E>> packs, outs;
  static const int64_t off0 = 0;
  packs.reserve(NI);
  outs.reserve(NI);
  for (LpIsa isa : isas) {
    const LpUKernels<E>* t = lp_ukernels_for<E>(isa);
    if (!t) continue;
    packs.emplace_back(lp_packed_size(t->pack, 1, K, N));
    lp_pack(t->pack, 1, K, N, w.data(), N, packs.back().data());
    const E *bp = packs.back().data(), *ap = a.data();
    E* cp = outs.emplace_back(M * N).data();
    const float* bi = bias.data();
    const int64_t bss = lp_slab_stride(t->pack, 1, K);
    vs.push_back({std::string(prefix) + t->name,
                  [=] { t->conv_nhwc(M, N, K, 1, &off0, ap, K, bp, bss, cp, N, bi, Act::Relu, nullptr, 0); }, {},
                  [=](int64_t j) { return double(to_f32(cp[j])); }, true});
  }
}

// The GEMM variants; `elems`: the number of result elements.
static void gemm_variants(int64_t M, int64_t K, int64_t N, std::mt19937& rng, std::vector<Variant>& vs,
                          double& flops, int64_t& elems) {
  // operands and results for the process's life: the variants' calls point into them
  static std::vector<float> a, w, bias;
  static std::vector<bf16_t> a16;
  static std::vector<f16_t> ah;
  static std::vector<std::vector<float>> wps, c32s;
  static const int64_t off0 = 0;
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  a.resize(M * K), w.resize(K * N), bias.resize(N);
  for (auto& x : a) x = bf16_to_f32(f32_to_bf16(d(rng)));
  for (auto& x : w) x = bf16_to_f32(f32_to_bf16(d(rng)));
  for (auto& x : bias) x = d(rng);
  a16.resize(M * K);
  for (int64_t i = 0; i < M * K; ++i) a16[i] = f32_to_bf16(a[i]);
  ah.resize(M * K);
  for (int64_t i = 0; i < M * K; ++i) ah[i] = f32_to_f16(a[i]);
  flops = 2.0 * M * N * K;
  elems = M * N;
  // fp32: each table's slabs of conv_nhwc_tile.nr columns, K x nr each (the weight cache's layout)
  const Isa f32_isas[] = {Isa::Avx512, Isa::Avx2Fma};
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
    float* cp = c32s.emplace_back(M * N).data();
    const float* bp = wp.data();
    vs.push_back({std::string("f32_") + f32->name, [=] {
                    f32->conv_nhwc(M, N, K, 1, &off0, a.data(), K, bp, nr, K * nr, cp, N, bias.data(), Act::Relu,
                                   nullptr, 0);
                  }, {}, [=](int64_t j) { return double(cp[j]); }});
  }
  if (vs.empty()) return;
  lp_gemm_variants<bf16_t>(kBf16Isas, "bf16_", M, K, N, a16, w, bias, vs);
  lp_gemm_variants<f16_t>(kF16Isas, "f16_", M, K, N, ah, w, bias, vs);
}

// Pixel stride (elements) of a scratch tile of c channels of `bytes` each: whole 64-byte lines, an odd number.
static int64_t tile_stride(int64_t c, int64_t bytes) {
  const int64_t per_line = 64 / bytes;
  if (c <= per_line) return c;
  int64_t lines = (c + per_line - 1) / per_line;
  if (lines % 2 == 0) ++lines;
  return lines * per_line;
}

// One element type's depthwise variants (as lp_gemm_variants): input pixels ps elements apart.
template <class E, size_t NI>
static void lp_dw_variants(const LpIsa (&isas)[NI], const char* prefix, int64_t C, int k, int s, int64_t H, int64_t W,
                           int64_t ps, const std::vector<E>& in, const std::vector<float>& w,
                           const std::vector<float>& bias, std::vector<Variant>& vs) {
  static std::vector<std::vector<E>> outs;
  const int64_t Ho = (H - 1) / s + 1, Wo = (W - 1) / s + 1;
  outs.reserve(NI);
  for (LpIsa isa : isas) {
    const LpUKernels<E>* t = lp_ukernels_for<E>(isa);
    if (!t) continue;
    E* op = outs.emplace_back(Ho * Wo * ps).data();
    const E* ip = in.data();
    const float *wp = w.data(), *bi = bias.data();
    vs.push_back({std::string(prefix) + t->name, [=] {
                    t->dwconv_nhwc(C, k, s, ip, ps, W * ps, 0, H, W, wp, C, bi, Act::Relu, op, ps, Wo * ps, 0, Ho);
                  }, {}, [=](int64_t j) { return double(to_f32(op[j / C * ps + j % C])); }, true});
  }
}

// The depthwise variants; `elems`: the number of result elements (Ho x Wo x C).
static void dw_variants(int64_t C, int k, int s, int64_t H, int64_t W, std::mt19937& rng, std::vector<Variant>& vs,
                        double& flops, int64_t& elems) {
  // operands and results for the process's life: the variants' calls point into them
  static std::vector<float> in, w, bias;
  static std::vector<bf16_t> in16;
  static std::vector<f16_t> inh;
  static std::vector<std::vector<float>> outs32;
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  const int64_t Ho = (H - 1) / s + 1, Wo = (W - 1) / s + 1;
  const int64_t ps32 = tile_stride(C, 4), ps16 = tile_stride(C, 2);
  in.assign(H * W * ps32, 0.f), in16.assign(H * W * ps16, bf16_t{}), inh.assign(H * W * ps16, f16_t{});
  for (int64_t p = 0; p < H * W; ++p)
    for (int64_t c = 0; c < C; ++c) {
      in[p * ps32 + c] = bf16_to_f32(f32_to_bf16(d(rng)));
      in16[p * ps16 + c] = f32_to_bf16(in[p * ps32 + c]);
      inh[p * ps16 + c] = f32_to_f16(in[p * ps32 + c]);
    }
  w.resize(k * k * C), bias.resize(C);
  for (auto& x : w) x = d(rng);
  for (auto& x : bias) x = d(rng);
  flops = 2.0 * Ho * Wo * C * k * k;
  elems = Ho * Wo * C;
  const Isa f32_isas[] = {Isa::Avx512, Isa::Avx2Fma};
  outs32.reserve(2);
  for (Isa isa : f32_isas) {
    const UKernels* f32 = ukernels_for(isa);
    if (!f32) continue;
    float* op = outs32.emplace_back(Ho * Wo * ps32).data();
    vs.push_back({std::string("f32_") + f32->name, [=] {
                    f32->dwconv_nhwc(C, k, s, in.data(), ps32, W * ps32, 0, H, W, w.data(), C, bias.data(), Act::Relu,
                                     op, ps32, Wo * ps32, 0, Ho);
                  }, {}, [=](int64_t j) { return double(op[j / C * ps32 + j % C]); }});
  }
  if (vs.empty()) return;
  lp_dw_variants<bf16_t>(kBf16Isas, "bf16_", C, k, s, H, W, ps16, in16, w, bias, vs);
  lp_dw_variants<f16_t>(kF16Isas, "f16_", C, k, s, H, W, ps16, inh, w, bias, vs);
}

int main(int argc, char** argv) {
  const bool dw = argc >= 2 && std::string(argv[1]) == "dw";
  if (argc < (dw ? 8 : 6) || (!dw && std::string(argv[1]) != "gemm")) {
    std::fprintf(stderr, "usage: bf16_kernels_cpu gemm M K N ROUNDS | dw C k s H W ROUNDS\n");
    return 2;
  }
  std::mt19937 rng(7);
  std::vector<Variant> vs;
  double flops = 0;
  int64_t elems = 0;
  int rounds;
  if (dw) {
    dw_variants(std::atoll(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]), std::atoll(argv[5]), std::atoll(argv[6]),
                rng, vs, flops, elems);
    rounds = std::atoi(argv[7]);
  } else {
    gemm_variants(std::atoll(argv[2]), std::atoll(argv[3]), std::atoll(argv[4]), rng, vs, flops, elems);
    rounds = std::atoi(argv[5]);
  }
  if (vs.empty()) {
    std::printf("{\"skipped\": \"no AVX2 / AVX-512F\"}\n");
    return 0;
  }
  // calls per round: ~10 ms at ~100 GFLOP/s
  const long reps = std::max<long>(3, long(1e9 / flops));
  std::vector<double> pf32, pdp, pamx, pph;
  for (auto& v : vs) v.call();  // warm-up
  for (int r = 0; r < rounds; ++r) {
    pf32.push_back(bf16_peak_fma32(200000));
    pdp.push_back(bf16_peak_dp(200000));
    pamx.push_back(bf16_peak_amx(20000));
    pph.push_back(bf16_peak_ph(200000));
    for (auto& v : vs) {
      const double t0 = thread_seconds();
      for (long i = 0; i < reps; ++i) v.call();
      v.gflops.push_back(flops * reps / (thread_seconds() - t0) / 1e9);
    }
  }
  double mx = 0;
  for (int64_t j = 0; j < elems; ++j) mx = std::max(mx, std::fabs(vs.front().at(j)));
  for (Variant& v : vs) {
    if (!v.lp) continue;
    double e = 0;
    for (int64_t j = 0; j < elems; ++j) e = std::max(e, std::fabs(v.at(j) - vs.front().at(j)));
    v.err = e / mx;
  }
  auto med = [](std::vector<double> x) {
    std::sort(x.begin(), x.end());
    return x.empty() ? 0.0 : x[x.size() / 2];
  };
  auto best = [](const std::vector<double>& x) { return x.empty() ? 0.0 : *std::max_element(x.begin(), x.end()); };
  const char* pn[] = {"fma32_peak", "vdpbf16ps_peak", "tdpbf16ps_peak", "vfmadd231ph_peak"};
  const std::vector<double>* pv[] = {&pf32, &pdp, &pamx, &pph};
  for (int i = 0; i < 4; ++i)
    if (best(*pv[i]) > 0)
      std::printf("{\"variant\": \"%s\", \"gflops_median\": %.2f, \"gflops_best\": %.2f}\n", pn[i], med(*pv[i]),
                  best(*pv[i]));
  for (auto& v : vs)
    std::printf("{\"variant\": \"%s\", \"gflops_median\": %.2f, \"gflops_best\": %.2f, \"reps\": %ld%s}\n",
                v.name.c_str(), med(v.gflops), best(v.gflops), reps,
                v.err >= 0 ? (", \"max_rel_err\": " + std::to_string(v.err)).c_str() : "");
  return 0;
}
