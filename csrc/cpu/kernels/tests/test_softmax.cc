// Self-checking tests of the SIMD exp2 and column softmax (interface/softmax.h) of every table compiled in
// and supported here (AVX2+FMA natively on x86-64, NEON on aarch64 / under qemu-aarch64) against the scalar
// fallback (std::exp2), over an edge-case battery: lengths below / at / above the vector width and odd, the
// whole exp2 range (large negative, -inf, underflow, overflow, NaN), columns with -inf entries (masked keys:
// must give exactly 0) and with huge spreads. Output buffers are poisoned with NaN with a margin after every
// row and at the end: elements outside the output must stay NaN. Inputs are exactly sized heap buffers so
// the ASan build catches any out-of-bounds read. Usage: test_softmax. Exit status 0 = all passed.
// (.cc, not .cpp: setup.py globs csrc/cpu/kernels/**/*.cpp into the torch extension; this has a main.)
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../interface/softmax.h"

using namespace mnv4::cpu;

static std::mt19937 rng(4321);
static int failures = 0, checks = 0;
static const float kNaN = std::numeric_limits<float>::quiet_NaN();
static const float kInf = std::numeric_limits<float>::infinity();
// Relative tolerance: the polynomial's error (< 2^-21) plus the scalar libm's rounding. Where the contract
// says exactly 0 (2^x for x < -125.5; the scalar oracle flushes there too) the result must be exactly 0.
static const float kRel = 4.8e-7f;

static bool close(float got, float want, float rel) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want) || want == 0.f) return got == want;
  return std::fabs(got - want) <= rel * std::fabs(want);
}

static void fail(const std::string& what, size_t i, float got, float want) {
  std::printf("FAIL %s: element %zu = %.9g, want %.9g\n", what.c_str(), i, got, want);
  ++failures;
}

// A table's exp2 (the softmax's building block) against the scalar one.
static void test_exp2(const SoftmaxUKernels& sk, f32_exp2_fn exp2) {
  int cases = 0;
  // The fixed edge values, then random lengths over every range.
  const std::vector<float> edge = {0.f,      -0.f,     1e-30f,   -1e-30f,  0.5f,     -0.5f,   0.49999997f, -0.49999997f,
                                   1.5f,     -1.5f,    2.5f,     -2.5f,    10.3f,    -10.3f,  -87.3f,      -100.f,
                                   -125.9f,  -126.f,   -126.4f,  -126.6f,  -127.f,   -130.f,  -149.f,      -150.f,
                                   -1000.f,  -1e30f,   -kInf,    127.f,    127.4f,   127.6f,  128.f,       200.f,
                                   1e30f,    kInf,     kNaN,     -3.25f,   -0.125f,  7.75f,   -64.0001f,   -63.9999f};
  std::vector<int64_t> lens = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 1000};
  for (int64_t n : lens)
    for (int range = 0; range < 4; ++range) {
      // range 0: [-1, 0]; 1: [-30, 5]; 2: [-150, -100] (underflow); 3: the edge list, cycled
      std::uniform_real_distribution<float> d(range == 0 ? -1.f : range == 1 ? -30.f : -150.f,
                                              range == 0 ? 0.f : range == 1 ? 5.f : -100.f);
      std::vector<float> x(n);
      for (int64_t i = 0; i < n; ++i) x[i] = range == 3 ? edge[(i * 7 + n) % edge.size()] : d(rng);
      std::vector<float> want(n + 9, kNaN), got(n + 9, kNaN);
      f32_exp2__scalar(n, x.data(), want.data());
      exp2(n, x.data(), got.data());
      ++checks;
      const std::string what = std::string(sk.name) + " exp2 n=" + std::to_string(n) + " range=" + std::to_string(range);
      for (int64_t i = 0; i < n + 9; ++i) {
        if (i >= n) {
          if (!std::isnan(got[i])) { fail(what + " (past the end)", i, got[i], kNaN); break; }
          continue;
        }
        if (!close(got[i], want[i], kRel)) { fail(what + " x=" + std::to_string(x[i]), i, got[i], want[i]); break; }
        if (x[i] == -kInf && got[i] != 0.f) { fail(what + " exp2(-inf) must be exactly 0", i, got[i], 0.f); break; }
      }
      ++cases;
    }
  // in place
  {
    std::vector<float> x(37), want(37);
    std::uniform_real_distribution<float> d(-20.f, 0.f);
    for (auto& v : x) v = d(rng);
    f32_exp2__scalar(37, x.data(), want.data());
    exp2(37, x.data(), x.data());
    ++checks;
    for (int i = 0; i < 37; ++i)
      if (!close(x[i], want[i], kRel)) { fail(std::string(sk.name) + " exp2 in place", i, x[i], want[i]); break; }
    ++cases;
  }
  // exactness where it is cheap to know: 2^i for integers i
  {
    std::vector<float> x, y;
    for (int i = -125; i <= 127; ++i) x.push_back(float(i));
    y.resize(x.size());
    exp2(int64_t(x.size()), x.data(), y.data());
    ++checks;
    for (size_t i = 0; i < x.size(); ++i)
      if (y[i] != std::ldexp(1.f, int(x[i]))) { fail(std::string(sk.name) + " exp2 of an integer", i, y[i], std::ldexp(1.f, int(x[i]))); break; }
    ++cases;
  }
  std::printf("%s exp2: %d cases\n", sk.name, cases);
}

static void test_softmax_cols(const SoftmaxUKernels& sk) {
  int cases = 0;
  const int64_t Ms[] = {1, 2, 3, 7, 8, 9, 17, 64, 144};
  const int64_t Ns[] = {0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 64, 65};
  for (int64_t M : Ms)
    for (int64_t N : Ns)
      for (int variant = 0; variant < 5; ++variant) {
        // variant 0: logits in [-4, 4]; 1: [-60, 60] (most entries underflow after max subtraction);
        // 2: with -inf entries (masked keys; each column keeps one finite entry); 3: huge spread (-1e30 .. 1e3);
        // 4: a NaN in every third column (first, middle or last row): that column's sum must be NaN
        const int64_t lds = N + (variant % 2 ? 3 : 0);
        const float span = variant == 1 ? 60.f : 4.f;
        std::uniform_real_distribution<float> d(-span, span);
        std::vector<float> s0(M * lds + (variant == 3 ? 1 : 0), kNaN);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            float v = d(rng);
            if (variant == 2 && (m * 5 + n * 3) % 4 == 1 && m != (n % M)) v = -kInf;
            if (variant == 3 && (m + n) % 3 == 0) v = (m + n) % 2 ? -1e30f : 1e3f + v;
            if (variant == 4 && n % 3 == 1 && m == (n / 3 % 3 == 0 ? 0 : n / 3 % 3 == 1 ? M / 2 : M - 1)) v = kNaN;
            s0[m * lds + n] = v;
          }
        // Output S: the input copied into a buffer of M*lds + margin with NaN between the rows' N and lds.
        std::vector<float> want(M * lds + 5, kNaN), got(M * lds + 5, kNaN);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) want[m * lds + n] = got[m * lds + n] = s0[m * lds + n];
        std::vector<float> swant(N + 9, kNaN), sgot(N + 9, kNaN);
        f32_softmax_cols__scalar(M, N, want.data(), lds, swant.data());
        sk.softmax_cols(M, N, got.data(), lds, sgot.data());
        ++checks;
        char buf[160];
        std::snprintf(buf, sizeof buf, "%s softmax_cols M=%lld N=%lld lds=%lld variant=%d", sk.name, (long long)M,
                      (long long)N, (long long)lds, variant);
        const std::string what = buf;
        bool ok = true;
        auto nan_col = [&](int64_t n) { return variant == 4 && n % 3 == 1; };
        for (size_t i = 0; i < got.size() && ok; ++i) {
          const bool inside = i < size_t(M * lds) && int64_t(i % lds) < N;
          if (!inside) {
            if (!std::isnan(got[i])) { fail(what + " (outside S written)", i, got[i], kNaN); ok = false; }
            continue;
          }
          if (nan_col(int64_t(i % lds))) {  // only the NaN entry itself is fixed (the column max may be NaN)
            if (std::isnan(s0[i]) && !std::isnan(got[i])) { fail(what + " (NaN logit)", i, got[i], kNaN); ok = false; }
            continue;
          }
          if (!close(got[i], want[i], kRel)) { fail(what, i, got[i], want[i]); ok = false; }
          if (s0[i] == -kInf && got[i] != 0.f) { fail(what + " (-inf logit must give exactly 0)", i, got[i], 0.f); ok = false; }
          if (!(got[i] >= 0.f && got[i] <= 1.f)) { fail(what + " (p outside [0, 1])", i, got[i], want[i]); ok = false; }
        }
        // sums: every term within kRel, so the sum is within kRel of the oracle's (plus M roundings)
        for (int64_t n = 0; n < N + 9 && ok; ++n) {
          if (n >= N) {
            if (!std::isnan(sgot[n])) { fail(what + " (sum past N written)", n, sgot[n], kNaN); ok = false; }
            continue;
          }
          if (nan_col(n)) {
            if (!std::isnan(sgot[n]) || !std::isnan(swant[n])) {
              fail(what + " sum of a column with a NaN", n, sgot[n], swant[n]);
              ok = false;
            }
            continue;
          }
          if (!close(sgot[n], swant[n], kRel + 1.2e-7f * M) || !(sgot[n] >= 1.f)) {
            fail(what + " sum", n, sgot[n], swant[n]);
            ok = false;
          }
        }
        ++cases;
      }
  std::printf("%s softmax_cols: %d cases\n", sk.name, cases);
}

int main() {
  // The scalar oracle itself against direct formulas: softmax of one column, base 2.
  {
    float s[3] = {1.f, 3.f, -kInf}, sum[1];
    f32_softmax_cols__scalar(3, 1, s, 1, sum);
    if (std::fabs(s[0] - 0.25f) > 1e-7f || s[1] != 1.f || s[2] != 0.f || std::fabs(sum[0] - 1.25f) > 1e-7f) {
      std::printf("FAIL scalar softmax_cols oracle\n");
      ++failures;
    }
  }
  int tables = 0;
  for (Isa isa : {Isa::Avx2Fma, Isa::Neon}) {
    const SoftmaxUKernels* sk = softmax_ukernels_for(isa);
    if (!sk) continue;
    ++tables;
    test_exp2(*sk, sk->exp2);
    test_softmax_cols(*sk);
  }
  if (tables == 0) {
    std::printf("FAIL: no SIMD softmax table is available on this CPU/build (nothing was tested)\n");
    return 1;
  }
  std::printf("%d checks, %d failures (%s)\n", checks, failures, softmax_ukernels().name);
  return failures ? 1 : 0;
}
