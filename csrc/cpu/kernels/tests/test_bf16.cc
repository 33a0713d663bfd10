// Self-checking tests of the reduced-precision microkernels (interface/ukernels_bf16.h): every bf16 / f16 table
// compiled in and usable here, the emulated AMX ones included, against a direct double-precision evaluation of
// the contract and against the scalar oracle table, over the edge-case battery; plus the conversions,
// exhaustively. Prints which tables ran natively, which through the tile emulation, and why any was skipped.
// Usage: test_bf16 [all|convert|conv|dwconv]. Exit status 0 = all passed.
// (.cc, not .cpp: setup.py globs csrc/cpu/kernels/**/*.cpp into the torch extension; this has a main.)
//
// Output buffers start poisoned (an all-ones NaN pattern): elements the kernel must write are checked, every
// other element must keep the pattern. Inputs live in exactly-sized heap buffers with NaN in every gap (between
// pixels, past K in a row), so a read outside the contract poisons the result, and the sanitizer build
// catches reads outside the buffers.
//
// Tolerance of an output (derivation): the inputs are exactly representable in E, so every product is exact
// in fp32 (8- or 11-bit significands). The kernel sums n = T*K + 1 terms (bias included) in fp32, each add
// rounding once (vdpbf16ps, tdpbf16ps and BFDOT also round once per product added; a fused add of two products
// only rounds less), so |sum - exact| <= gamma_n * mag with gamma_n = n u32 / (1 - n u32), u32 = 2^-24, mag =
// sum |terms|. A table that sums chunks of `f16_acc_chunk` products in E first adds gamma_chunk(u_E) * mag
// (each chunk's error is bounded by its own sum of |terms|, which add up to mag). Denormal results that
// vdpbf16ps / AMX flush to zero (or fp16 sums that lose precision below 2^-14) add at most n times the flush
// threshold in absolute terms (Ty<E>::tiny), and an output in E's subnormal range rounds with an absolute
// error of half its spacing (Ty<E>::out_tiny). The activation is 1-Lipschitz (relu) or 1.13-Lipschitz (gelu), and the
// vectorised gelu adds <= 0.75e-7 |x| (vec_math.h) plus a few fp32 roundings (bounded by 4e-7 |x|). The residual
// add rounds once in fp32 (u32 (|y| + |R|)). The result, e away from the exact value, is rounded once to E:
// |got - want| <= u_E (|want| + e) + e, with u_E = 2^-8 (bf16) or 2^-11 (f16).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../interface/ukernels_bf16.h"

using namespace mnv4::cpu;

static std::mt19937 rng(2024);
static int failures = 0, checks = 0;
static const double kNaN = std::numeric_limits<double>::quiet_NaN();

template <class E>
struct Ty;
template <>
struct Ty<bf16_t> {
  static constexpr const char* name = "bf16";
  static constexpr double u = 1.0 / 256;         // unit roundoff, 8-bit significand
  // absolute error of one step below the normal range: vdpbf16ps / tdpbf16ps flush fp32 results under 2^-126
  static constexpr double tiny = 1.1754944e-38;
  static constexpr double out_tiny = 4.5917748e-41;  // half the spacing of bf16 subnormal outputs, 2^-134
  static constexpr float min_mag = 1.f / 256;     // random inputs: products stay normal
  static float f(bf16_t h) { return bf16_to_f32(h); }
  static bf16_t e(float x) { return f32_to_bf16(x); }
};
template <>
struct Ty<f16_t> {
  static constexpr const char* name = "f16";
  static constexpr double u = 1.0 / 2048;        // 11-bit significand
  // half the spacing of fp16 subnormals, 2^-25: a step of a chunk sum in fp16 (or the output's rounding)
  // below 2^-14 errs by up to this much in absolute terms
  static constexpr double tiny = 2.9802322e-8;
  static constexpr double out_tiny = 2.9802322e-8;
  static constexpr float min_mag = 1.f / 64;
  static float f(f16_t h) { return f16_to_f32(h); }
  static f16_t e(float x) { return f32_to_f16(x); }
};

static const char* act_name(Act a) { return a == Act::Relu ? "relu" : a == Act::Gelu ? "gelu" : "none"; }
static double act_d(double x, Act a) {
  if (a == Act::Relu) return x < 0 ? 0.0 : x;  // NaN stays NaN, as torch.relu
  if (a == Act::Gelu) return 0.5 * x * (1.0 + std::erf(x * 0.70710678118654752440));
  return x;
}

// A random value exactly representable in E, |x| in [min_mag, 1].
template <class E>
static float rand_val() {
  std::uniform_real_distribution<float> d(Ty<E>::min_mag, 1.f);
  const float x = std::uniform_int_distribution<int>(0, 1)(rng) ? d(rng) : -d(rng);
  return Ty<E>::f(Ty<E>::e(x));
}

static const uint16_t kPoison = 0xffff;  // a NaN in both bf16 and f16

template <class E>
static E nan_e() {
  return Ty<E>::e(std::numeric_limits<float>::quiet_NaN());
}

// One output element: want (double, NaN allowed), tol; got must be NaN iff want is.
template <class E>
static bool check_elem(E got, double want, double tol, const std::string& what, size_t i, const char* vs) {
  const double g = Ty<E>::f(got);
  const bool ok = std::isnan(want) ? std::isnan(g) : (!std::isnan(g) && std::fabs(g - want) <= tol);
  if (!ok) {
    std::printf("FAIL %s: element %zu = %.9g, want %.9g (%s, tol %.3g)\n", what.c_str(), i, g, want, vs, tol);
    ++failures;
  }
  return ok;
}

// f64_to_f16 (the fp16 emulations' one rounding of an exact double), over every finite fp16 x and the next
// value xn of larger magnitude: x itself, their midpoint (to the even one), and 2^-30 of their gap either side
// of it (closer than any float, so a rounding through fp32 first would tie); plus overflow and NaN.
static int test_f64_to_f16() {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    if ((h & 0x7fffu) >= 0x7bffu) continue;  // inf / NaN, and 65504 (its next is inf)
    const f16_t x{uint16_t(h)}, xn{uint16_t(h + 1)};
    const double f = f16_to_f32(x), fn = f16_to_f32(xn), mid = (f + fn) / 2, tiny = (fn - f) * 0x1p-30;
    const uint16_t even = (h & 1u) ? uint16_t(h + 1) : uint16_t(h);
    if (f64_to_f16(f).bits != h || f64_to_f16(mid).bits != even || f64_to_f16(mid + tiny).bits != xn.bits ||
        f64_to_f16(mid - tiny).bits != h) {
      if (bad++ < 5) std::printf("FAIL f64_to_f16 around 0x%04x\n", h);
    }
  }
  if (f64_to_f16(65520.0).bits != 0x7c00u || f64_to_f16(65519.99).bits != 0x7bffu ||
      f64_to_f16(-1e300).bits != 0xfc00u)
    ++bad;
  if (!std::isnan(f16_to_f32(f64_to_f16(std::numeric_limits<double>::quiet_NaN())))) ++bad;
  return bad;
}

// ---- conversions: exhaustive over the 65536 bit patterns ----
template <class E>
static void test_convert() {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const E x{uint16_t(h)};
    const float f = Ty<E>::f(x);
    const E back = Ty<E>::e(f);
    if (std::isnan(f)) {
      if (!std::isnan(Ty<E>::f(back))) ++bad;
      continue;
    }
    if (back.bits != h) {  // exact round trip
      if (bad++ < 5) std::printf("FAIL %s round trip 0x%04x -> %g -> 0x%04x\n", Ty<E>::name, h, f, back.bits);
      continue;
    }
    // the midpoint to the next value of larger magnitude rounds to the one with an even last bit, and a
    // value just above the midpoint rounds up (finite, non-maximal values only)
    const E nx{uint16_t(h + 1)};
    const float fn = Ty<E>::f(nx);
    if ((h & 0x7fffu) == 0x7fffu || std::isinf(f) || std::isnan(fn) || std::isinf(fn)) continue;
    const float mid = float((double(f) + double(fn)) / 2);  // exact: the midpoint has one more bit
    const E r = Ty<E>::e(mid);
    const uint16_t even = (h & 1u) ? uint16_t(h + 1) : uint16_t(h);
    if (r.bits != even) {
      if (bad++ < 5) std::printf("FAIL %s midpoint of 0x%04x rounds to 0x%04x\n", Ty<E>::name, h, r.bits);
    }
    const float above = std::nextafter(mid, fn);
    if (Ty<E>::e(above).bits != nx.bits && std::fabs(double(above)) > 0) {
      if (bad++ < 5) std::printf("FAIL %s above the midpoint of 0x%04x\n", Ty<E>::name, h);
    }
  }
  // overflow and NaN
  if (!std::isinf(Ty<E>::f(Ty<E>::e(std::numeric_limits<float>::infinity())))) ++bad;
  if (!std::isnan(Ty<E>::f(Ty<E>::e(std::numeric_limits<float>::quiet_NaN())))) ++bad;
  if (std::is_same<E, f16_t>::value && !std::isinf(Ty<E>::f(Ty<E>::e(65520.f)))) ++bad;  // ties to even: inf
  if (std::is_same<E, f16_t>::value && Ty<E>::f(Ty<E>::e(65519.f)) != 65504.f) ++bad;
  if (std::is_same<E, f16_t>::value) bad += test_f64_to_f16();
  ++checks;
  if (bad) {
    std::printf("FAIL %s conversions: %d errors\n", Ty<E>::name, bad);
    ++failures;
  }
  std::printf("%s conversions: 65536 patterns\n", Ty<E>::name);
}

// ---- conv_nhwc ----
struct ConvCase {
  int64_t M, N, K;
  int taps;  // 1 (pointwise), 9 (3x3 over a row band) or 3 (3x3, the kernel's rows as taps: K = 3 * Cin)
  int s;     // stride of the 3x3 conv
  Act act;
  int res;  // 0 none, 1 separate R, 2 in place (C == R)
  bool bias;
  int nan;  // 0 none, 1 NaN in A, 2 NaN in the weights
};

template <class E>
static void run_conv_case(const LpUKernels<E>& uk, const LpUKernels<E>& oracle, const ConvCase& cc) {
  const int64_t M = cc.M, N = cc.N, K = cc.K;
  const int T = cc.taps;
  // A: pixel rows with K valid channels at pixel stride ps >= K (NaN in the gap): T = 1: M rows; T = 9: a band
  // of 3 rows of Wp pixels, output pixel m at m*s, taps (ky, kx) at (ky*Wp + kx) pixels. T = 3 (conv.cpp's
  // form, the stems' K = 9, lda = 6 with Cin = 3): 3 rows of Wp pixels of Cin = K / 3 channels, no gap, tap ky
  // at ky*Wp pixels, each row as long as the last window needs or one pixel longer with NaN there.
  const int64_t ps = T == 3 ? K / 3 : K + (M + N) % 3;
  std::vector<int64_t> off(T);
  int64_t lda, apix, valid = ps;  // A's pixels, and the valid elements of each
  std::vector<char> used;         // T = 3: the pixels inside some window
  if (T == 1) {
    off[0] = 0, lda = ps, apix = M;
  } else if (T == 3) {
    const int64_t span = (M - 1) * cc.s + 3, Wp = span + (M + N) % 2;
    for (int ky = 0; ky < 3; ++ky) off[ky] = ky * Wp * ps;
    lda = cc.s * ps, apix = 3 * Wp;
    used.assign(size_t(apix), 0);
    for (int64_t p = 0; p < apix; ++p) used[p] = p % Wp < span;
  } else {
    const int64_t Wp = (M - 1) * cc.s + 3 + (N % 2);
    for (int ky = 0; ky < 3; ++ky)
      for (int kx = 0; kx < 3; ++kx) off[ky * 3 + kx] = (ky * Wp + kx) * ps;
    lda = cc.s * ps, apix = 3 * Wp;
  }
  if (T != 3) valid = K;
  std::vector<E> A(size_t(std::max<int64_t>(1, (apix - 1) * ps + valid)), nan_e<E>());
  std::vector<double> Ad(A.size(), kNaN);
  for (int64_t p = 0; p < apix; ++p)
    for (int64_t c = 0; c < valid && (used.empty() || used[p]); ++c) {
      const float v = rand_val<E>();
      A[p * ps + c] = Ty<E>::e(v);
      Ad[p * ps + c] = v;
    }
  // weights W(t, k, n) as fp32 [T*K][N], exactly representable in E
  std::vector<float> w(size_t(std::max<int64_t>(1, T * K * N)));
  for (auto& x : w) x = rand_val<E>();
  std::vector<float> bias(N);
  for (auto& x : bias) x = rand_val<E>();
  if (cc.nan == 1 && K > 0) {  // one NaN in A at a used element
    const int64_t m = (M * 7) / 11, t = T / 2, k = (K * 5) / 7;
    A[m * lda + off[t] + k] = nan_e<E>();
    Ad[m * lda + off[t] + k] = kNaN;
  }
  if (cc.nan == 2 && K > 0) w[((T - 1) * K + K / 3) * N + (N * 3) / 5] = std::numeric_limits<float>::quiet_NaN();
  const int64_t ldc = N + (K % 3), ldr = cc.res == 2 ? ldc : N + (M % 2) * 3;
  std::vector<E> R(size_t((M - 1) * ldr + N), nan_e<E>());
  std::vector<double> Rd(R.size(), 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const float v = rand_val<E>();
      R[m * ldr + n] = Ty<E>::e(v);
      Rd[m * ldr + n] = v;
    }
  // the packed weights, exactly sized
  const int64_t psz = lp_packed_size(uk.pack, T, K, N), bss = lp_slab_stride(uk.pack, T, K);
  std::vector<E> Bp(size_t(std::max<int64_t>(1, psz)));
  lp_pack(uk.pack, T, K, N, w.data(), N, Bp.data());
  std::vector<E> Bo(size_t(std::max<int64_t>(1, lp_packed_size(oracle.pack, T, K, N))));
  lp_pack(oracle.pack, T, K, N, w.data(), N, Bo.data());
  // expected values
  const size_t cn = size_t(M * ldc + 4);
  std::vector<double> want(cn, 0.0), tol(cn, 0.0);
  const double u32 = 1.0 / (1 << 24), n_terms = double(T) * K + 1;
  const double gam = n_terms * u32 / (1 - n_terms * u32);
  const int kc = uk.f16_acc_chunk;
  const double gchunk = kc ? kc * Ty<E>::u / (1 - kc * Ty<E>::u) : 0.0;
  const double lip = cc.act == Act::Gelu ? 1.13 : 1.0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = cc.bias ? bias[n] : 0.0, mag = cc.bias ? std::fabs(bias[n]) : 0.0;
      for (int t = 0; t < T; ++t)
        for (int64_t k = 0; k < K; ++k) {
          const double p = Ad[m * lda + off[t] + k] * double(w[(t * K + k) * N + n]);
          s += p;
          mag += std::fabs(p);
        }
      double y = act_d(s, cc.act);
      const double r = cc.res ? Rd[m * ldr + n] : 0.0;
      if (cc.res) y += r;
      const double e = lip * ((gam + gchunk) * mag + n_terms * Ty<E>::tiny + (cc.act == Act::Gelu ? 4e-7 * std::fabs(s) : 0)) +
                       u32 * (std::fabs(y) + std::fabs(r)) + 1e-30;
      want[m * ldc + n] = y;
      tol[m * ldc + n] = Ty<E>::u * (std::fabs(y) + e) + e + Ty<E>::out_tiny;
    }
  std::vector<E> got(cn, E{kPoison}), ref(cn, E{kPoison});
  const float* bp = cc.bias ? bias.data() : nullptr;
  if (cc.res == 2) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) got[m * ldc + n] = ref[m * ldc + n] = R[m * ldr + n];
    uk.conv_nhwc(M, N, K, T, off.data(), A.data(), lda, Bp.data(), bss, got.data(), ldc, bp, cc.act, got.data(), ldc);
    oracle.conv_nhwc(M, N, K, T, off.data(), A.data(), lda, Bo.data(), lp_slab_stride(oracle.pack, T, K), ref.data(),
                     ldc, bp, cc.act, ref.data(), ldc);
  } else {
    const E* rp = cc.res ? R.data() : nullptr;
    uk.conv_nhwc(M, N, K, T, off.data(), A.data(), lda, Bp.data(), bss, got.data(), ldc, bp, cc.act, rp, ldr);
    oracle.conv_nhwc(M, N, K, T, off.data(), A.data(), lda, Bo.data(), lp_slab_stride(oracle.pack, T, K), ref.data(),
                     ldc, bp, cc.act, rp, ldr);
  }
  char what[300];
  std::snprintf(what, sizeof what, "%s %s conv_nhwc M=%lld N=%lld K=%lld taps=%d s=%d act=%s res=%d bias=%d nan=%d",
                Ty<E>::name, uk.name, (long long)M, (long long)N, (long long)K, T, cc.s, act_name(cc.act), cc.res,
                int(cc.bias), cc.nan);
  ++checks;
  for (size_t i = 0; i < cn; ++i) {
    const bool inside = i < size_t(M * ldc) && int64_t(i % ldc) < N;
    if (!inside) {
      if (got[i].bits != kPoison) {
        std::printf("FAIL %s: element %zu outside the output was written\n", what, i);
        ++failures;
        return;
      }
      continue;
    }
    if (!check_elem(got[i], want[i], tol[i], what, i, "vs exact")) return;
    // against the scalar oracle: both within tol of the exact value
    const double o = Ty<E>::f(ref[i]);
    if (!check_elem(got[i], o, 2 * tol[i], what, i, "vs scalar oracle")) return;
  }
}

template <class E>
static void test_conv(const LpUKernels<E>& uk, const LpUKernels<E>& oracle) {
  const int64_t mr = std::max(uk.gemm_mr, 1), nr = uk.pack.nr;
  std::vector<int64_t> Ms;
  for (int64_t m = 1; m <= mr + 1; ++m) Ms.push_back(m);
  for (int64_t m : {2 * mr + 3, int64_t(49), int64_t(100)})
    if (std::find(Ms.begin(), Ms.end(), m) == Ms.end()) Ms.push_back(m);
  const int64_t Ns[] = {1, 3, 15, 16, 17, nr - 1, nr, nr + 1, 2 * nr + 5, 3 * nr};
  const int64_t Ks[] = {0, 1, 2, 3, 7, 31, 32, 33, 64, 71, 160};
  int cases = 0, idx = 0;
  for (int64_t M : Ms)
    for (int64_t N : Ns)
      for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ++ki, ++idx) {
        if ((ki + M + N) % 3 != 0) continue;  // a third of the K values per (M, N); all of them over the battery
        const int64_t K = Ks[ki];
        ConvCase cc;
        cc.M = M, cc.N = N, cc.K = K;
        cc.taps = (idx % 4 == 1 && K <= 33) ? 9 : 1;
        cc.s = 1 + (idx / 4) % 2;
        cc.act = static_cast<Act>(idx % 3);
        cc.res = (idx / 3) % 3;
        cc.bias = idx % 5 != 2;
        cc.nan = idx % 7 == 3 ? 1 : idx % 7 == 5 ? 2 : 0;
        run_conv_case(uk, oracle, cc);
        ++cases;
      }
  // NaN in A and in the weights under every activation (relu must propagate it), pointwise and 3x3
  for (int nan = 1; nan <= 2; ++nan)
    for (int a = 0; a < 3; ++a)
      for (int taps : {1, 9}) {
        ConvCase cc{mr + 2, nr + 3, 19, taps, 2, static_cast<Act>(a), a == 1 ? 1 : 0, true, nan};
        run_conv_case(uk, oracle, cc);
        ++cases;
      }
  // the kernel's rows as taps (conv.cpp's form): Cin 1, 3 (the stems: the tables' compile-time stem tile,
  // bf16_impl.h's LpStemShape) and 4, stride 1 and 2, row tiles of every remainder of the tall tile, NaN in A
  // and in the weights
  for (int64_t Cin : {1, 3, 4})
    for (int s = 1; s <= 2; ++s)
      for (int64_t M : {1, 2, 5, 7, 8, 13, 14, 15, 21, 27, 28, 29, 56, 111})
        for (int64_t N : {int64_t(1), int64_t(16), int64_t(24), nr, nr + 1, 3 * nr / 2}) {
          ConvCase cc{M, N, 3 * Cin, 3, s, static_cast<Act>(idx % 3), idx % 3, idx % 5 != 2, idx % 4 == 1 ? 1
                      : idx % 4 == 3 ? 2 : 0};
          ++idx;
          run_conv_case(uk, oracle, cc);
          ++cases;
        }
  // several row blocks (32 register tiles each, the last one up to 1.5x) and a long K, pointwise and 3x3
  for (int taps : {1, 9}) {
    ConvCase cc{3 * 32 * mr + 5, 2 * nr + 3, taps == 1 ? 300 : 33, taps, 1, Act::Relu, 1, true, 0};
    run_conv_case(uk, oracle, cc);
    ++cases;
  }
  std::printf("%s %s conv_nhwc: %d cases\n", Ty<E>::name, uk.name, cases);
}

// ---- dwconv_nhwc ----
template <class E>
static void test_dwconv(const LpUKernels<E>& uk) {
  int cases = 0, idx = 0;
  const double u32 = 1.0 / (1 << 24);
  for (int64_t C : {1, 3, 15, 16, 17, 33, 40})
    for (int k : {1, 3, 5, 7})
      for (int s : {1, 2})
        for (int64_t H : {1, 2, 5})
          for (int64_t Wd : {1, 2, 3, 5, 8, 13, 17, 29})
            for (int band = 0; band < 3; ++band, ++idx) {
              const Act act = static_cast<Act>((C + k + H + Wd + band) % 3);
              const bool has_bias = idx % 4 != 1;
              const int p = k / 2;
              const int64_t Ho = (H - 1) / s + 1, Wo = (Wd - 1) / s + 1;
              const int64_t oy0 = band == 0 ? 0 : band == 1 ? Ho / 3 : Ho - 1,
                            oy1 = band == 1 ? std::min(Ho, oy0 + (Ho + 1) / 2) : Ho;
              const int64_t r0 = std::max<int64_t>(0, oy0 * s - p), r1 = std::min<int64_t>(H, (oy1 - 1) * s + p + 1);
              const int64_t in_ps = C + idx % 3, in_rs = Wd * in_ps + (idx / 3) % 4, ldw = C + (idx / 2) % 3,
                            out_ps = C + (idx / 4) % 3, out_rs = Wo * out_ps + (idx / 5) % 3;
              std::vector<E> in(size_t((r1 - r0 - 1) * in_rs + (Wd - 1) * in_ps + C), nan_e<E>());
              std::vector<double> ind(in.size(), kNaN);
              for (int64_t y = r0; y < r1; ++y)
                for (int64_t x = 0; x < Wd; ++x)
                  for (int64_t c = 0; c < C; ++c) {
                    const float v = rand_val<E>();
                    in[(y - r0) * in_rs + x * in_ps + c] = Ty<E>::e(v);
                    ind[(y - r0) * in_rs + x * in_ps + c] = v;
                  }
              if (idx % 9 == 4) {  // a NaN input pixel channel: exactly its neighbourhood's outputs turn NaN
                const int64_t y = (r0 + r1) / 2, x = Wd / 2, c = C / 2;
                in[(y - r0) * in_rs + x * in_ps + c] = nan_e<E>();
                ind[(y - r0) * in_rs + x * in_ps + c] = kNaN;
              }
              std::vector<float> w(size_t((k * k - 1) * ldw + C)), bias(C);
              std::uniform_real_distribution<float> d(-1.f, 1.f);
              for (auto& x : w) x = d(rng);
              for (auto& x : bias) x = d(rng);
              const int64_t rows = oy1 - oy0;
              const size_t on = size_t(rows * out_rs + 3);
              std::vector<E> got(on, E{kPoison});
              uk.dwconv_nhwc(C, k, s, in.data(), in_ps, in_rs, r0, H, Wd, w.data(), ldw, has_bias ? bias.data() : nullptr,
                             act, got.data(), out_ps, out_rs, oy0, oy1);
              char what[300];
              std::snprintf(what, sizeof what, "%s %s dwconv_nhwc C=%lld k=%d s=%d H=%lld W=%lld rows=[%lld,%lld) act=%s",
                            Ty<E>::name, uk.name, (long long)C, k, s, (long long)H, (long long)Wd, (long long)oy0,
                            (long long)oy1, act_name(act));
              ++checks;
              const double lip = act == Act::Gelu ? 1.13 : 1.0, n_terms = k * k + 1.0;
              bool ok = true;
              for (size_t i = 0; i < on && ok; ++i) {
                const int64_t j = int64_t(i % out_rs);
                const bool inside = i < size_t(rows * out_rs) && j < Wo * out_ps && j % out_ps < C;
                if (!inside) {
                  if (got[i].bits != kPoison) {
                    std::printf("FAIL %s: element %zu outside the output was written\n", what, i);
                    ++failures;
                    ok = false;
                  }
                  continue;
                }
                const int64_t oy = oy0 + int64_t(i) / out_rs, ox = j / out_ps, c = j % out_ps;
                double sum = has_bias ? bias[c] : 0.0, mag = has_bias ? std::fabs(bias[c]) : 0.0;
                for (int a = 0; a < k; ++a) {
                  const int64_t y = oy * s + a - p;
                  if (y < 0 || y >= H) continue;
                  for (int b = 0; b < k; ++b) {
                    const int64_t x = ox * s + b - p;
                    if (x < 0 || x >= Wd) continue;
                    const double t = double(w[(a * k + b) * ldw + c]) * ind[(y - r0) * in_rs + x * in_ps + c];
                    sum += t;
                    mag += std::fabs(t);
                  }
                }
                const double want = act_d(sum, act);
                const double e = lip * (n_terms * u32 / (1 - n_terms * u32) * mag +
                                        (act == Act::Gelu ? 4e-7 * std::fabs(sum) : 0)) + 1e-30;
                ok = check_elem(got[i], want, Ty<E>::u * (std::fabs(want) + e) + e + Ty<E>::out_tiny, what, i, "vs exact");
              }
              ++cases;
            }
  std::printf("%s %s dwconv_nhwc: %d cases\n", Ty<E>::name, uk.name, cases);
}

template <class E>
static int run_tables(const std::string& group, const LpIsa* isas, size_t n, std::string& native,
                      std::string& emulated, std::string& skipped) {
  const LpUKernels<E>* oracle = lp_ukernels_for<E>(LpIsa::Scalar);
  int tables = 0;
  for (size_t i = 0; i < n; ++i) {
    const char* why = nullptr;
    const LpUKernels<E>* uk = lp_ukernels_for<E>(isas[i], &why);
    if (!uk) {
      static const char* const names[] = {"scalar", "avx512", "avx512bf16", "amx", "amx_emu", "amx_emu_portable",
                                          "neon", "neon_bf16", "neon_fp16", "avx2", "neon_fp16_emu",
                                          "avx512fp16", "avx512fp16_emu"};
      skipped += std::string(" ") + Ty<E>::name + ":" + names[int(isas[i])] + " (" + (why ? why : "?") + ")";
      continue;
    }
    ++tables;
    const bool emu = uk->isa == LpIsa::AmxEmu || uk->isa == LpIsa::AmxEmuPortable || uk->isa == LpIsa::NeonFp16Emu ||
                     uk->isa == LpIsa::Avx512Fp16Emu;
    (emu ? emulated : native) += std::string(" ") + Ty<E>::name + ":" + uk->name;
    if (group == "conv" || group == "all") test_conv(*uk, *oracle);
    if (group == "dwconv" || group == "all") test_dwconv(*uk);
  }
  return tables;
}

// lp_pack_block: a K x N bf16 matrix packed by blocks that partition it (row bands, column bands, both; odd
// boundaries), from a row-major and from a transposed copy, into a buffer of poison, equals lp_pack of the same
// values (exact in bf16) bit for bit, padding included.
static void test_pack_block() {
  for (const LpPack& p : {kPackBf16Kpair32, kPackBf16Kpair16, kPackF16K16, kPackF16K32})
    for (int64_t K : {1, 2, 5, 64, 67})
      for (int64_t N : {1, 7, 16, 33, 64})
        for (int split = 0; split < 4; ++split) {  // 0: whole; 1: row bands; 2: column bands; 3: both
          std::vector<bf16_t> w(size_t(K * N)), wt(size_t(K * N));  // W row-major and W^T
          std::vector<float> wf(size_t(K * N));
          for (int64_t k = 0; k < K; ++k)
            for (int64_t n = 0; n < N; ++n) {
              const bf16_t v = f32_to_bf16(rand_val<bf16_t>());
              w[size_t(k * N + n)] = wt[size_t(n * K + k)] = v;
              wf[size_t(k * N + n)] = bf16_to_f32(v);
            }
          const int64_t size = lp_packed_size(p, 1, K, N);
          const size_t sz = static_cast<size_t>(size);
          std::vector<bf16_t> want(sz), got(sz, bf16_t{kPoison}), got_t(sz, bf16_t{kPoison});
          lp_pack(p, 1, K, N, wf.data(), N, want.data());
          const int64_t kb = split & 1 ? std::max<int64_t>(1, K / 3) : K;
          const int64_t nb = split & 2 ? std::max<int64_t>(1, N / 3) : N;
          for (int64_t k0 = 0; k0 < K; k0 += kb)
            for (int64_t n0 = 0; n0 < N; n0 += nb) {
              const int64_t k1 = std::min(K, k0 + kb), n1 = std::min(N, n0 + nb);
              lp_pack_block(p, K, N, k0, k1, n0, n1, w.data() + k0 * N + n0, N, 1, got.data());
              lp_pack_block(p, K, N, k0, k1, n0, n1, wt.data() + n0 * K + k0, 1, K, got_t.data());
            }
          ++checks;
          for (int64_t i = 0; i < size; ++i)
            if (got[size_t(i)].bits != want[size_t(i)].bits || got_t[size_t(i)].bits != want[size_t(i)].bits) {
              std::printf("FAIL lp_pack_block %s K=%lld N=%lld split=%d at %lld: %04x %04x want %04x\n", p.name,
                          (long long)K, (long long)N, split, (long long)i, got[size_t(i)].bits, got_t[size_t(i)].bits,
                          want[size_t(i)].bits);
              ++failures;
              break;
            }
        }
}

// The f16 tables with fp16 arithmetic (f16_acc_chunk > 0: neon_fp16, avx512fp16 and their emulations) against
// the arithmetic they promise, bit for bit. chunked_f16 below is that arithmetic, written here from the contract
// (ukernels_bf16.h f16_acc_chunk), output by output over the unpacked weights: per tap, chunks of `chunk` products
// summed from zero by fused multiply-adds, each rounded once to fp16 (f64_to_f16 of the exact double: a product
// of two fp16 values is exact in a double, and so is its sum with a partial sum unless the partial sum is below
// 2^-42 of it, where it could only break a tie), each chunk's sum added to an fp32 accumulator that starts at the
// bias; then the activation, the residual and one rounding to fp16. Shapes cover the chunk tail, several taps,
// row and column tails of the register tiles, the residual and NaN (activation none and relu; gelu's vector form
// differs from the scalar one in the last bits). Also a hand-computed case where fp16 chunk sums differ from fp32
// accumulation (2048 + 1 is a tie in fp16, rounded to the even 2048).
static float chunked_f16(int64_t m, int64_t n, int64_t N, int64_t K, int T, const int64_t* off, const f16_t* A,
                         int64_t lda, const std::vector<float>& w, const float* bias, Act act, const f16_t* R,
                         int chunk) {
  float acc = bias ? bias[n] : 0.f;
  for (int t = 0; t < T; ++t)
    for (int64_t k0 = 0; k0 < K; k0 += chunk) {
      f16_t h{0};
      for (int64_t k = k0; k < std::min<int64_t>(K, k0 + chunk); ++k)
        h = f64_to_f16(double(f16_to_f32(h)) + double(f16_to_f32(A[m * lda + off[t] + k])) *
                                                   double(f16_to_f32(f32_to_f16(w[size_t((t * K + k) * N + n)]))));
      acc += f16_to_f32(h);
    }
  float y = act == Act::Relu ? (acc > 0.f || std::isnan(acc) ? acc : 0.f) : acc;
  if (R) y += f16_to_f32(R[m * N + n]);
  return y;
}

static void f16_hand_case(const LpUKernels<f16_t>& uk) {
  float w[9], bias[1] = {0.f};
  std::vector<f16_t> packed(size_t(lp_packed_size(uk.pack, 1, 9, 1)));
  f16_t a[9], c[1];
  for (int k = 0; k < 9; ++k) w[k] = k == 0 ? 2048.f : 1.f, a[k] = f32_to_f16(1.f);
  lp_pack(uk.pack, 1, 9, 1, w, 1, packed.data());
  const int64_t off0 = 0;
  uk.conv_nhwc(1, 1, 9, 1, &off0, a, 9, packed.data(), lp_slab_stride(uk.pack, 1, 9), c, 1, bias, Act::None,
               nullptr, 0);
  ++checks;
  // chunk 8: 2048 (seven ties to even), then 1: 2049 rounds to 2048; a chunk of 9 or more: 2048 (eight ties)
  if (f16_to_f32(c[0]) != 2048.f) {
    std::printf("FAIL %s hand case: %g, want 2048\n", uk.name, f16_to_f32(c[0]));
    ++failures;
  }
}

static void test_f16_arithmetic(const LpUKernels<f16_t>& uk) {
  f16_hand_case(uk);
  int cases = 0;
  for (int64_t M : {1, 3, 4, 5, 8, 9, 17})
    for (int64_t N : {1, 16, 17, 33, 40, 64})
      for (int64_t K : {0, 1, 7, 8, 9, 15, 16, 17, 31, 64, 161})
        for (int T : {1, 9}) {
          if (T == 9 && K > 64) continue;
          const int idx = cases++;
          const Act act = idx % 2 ? Act::Relu : Act::None;
          const bool res = idx % 3 == 1, has_bias = idx % 4 != 3;
          const int64_t lda = K + 3, ldc = N + 1;
          std::vector<int64_t> off(static_cast<size_t>(T));
          for (int t = 0; t < T; ++t) off[size_t(t)] = t * lda;
          std::vector<f16_t> A(size_t((M + T) * lda + 1));
          for (auto& v : A) v = f32_to_f16(rand_val<f16_t>() * 8.f);
          if (idx % 5 == 4 && K > 0) A[size_t(K / 2)] = nan_e<f16_t>();
          std::vector<float> w(static_cast<size_t>(T * K * N)), bias(static_cast<size_t>(N));
          for (auto& v : w) v = rand_val<f16_t>();
          for (auto& v : bias) v = rand_val<f16_t>();
          std::vector<f16_t> R(static_cast<size_t>(M * N));
          for (auto& v : R) v = f32_to_f16(rand_val<f16_t>());
          std::vector<f16_t> got(size_t(M * ldc), f16_t{kPoison});
          const float* bp = has_bias ? bias.data() : nullptr;
          const f16_t* rp = res ? R.data() : nullptr;
          std::vector<f16_t> Bp(size_t(std::max<int64_t>(1, lp_packed_size(uk.pack, T, K, N))));
          lp_pack(uk.pack, T, K, N, w.data(), N, Bp.data());
          uk.conv_nhwc(M, N, K, T, off.data(), A.data(), lda, Bp.data(), lp_slab_stride(uk.pack, T, K), got.data(),
                       ldc, bp, act, rp, N);
          ++checks;
          bool ok = true;
          for (int64_t m = 0; m < M && ok; ++m)
            for (int64_t n = 0; n < N && ok; ++n) {
              const f16_t want = f32_to_f16(chunked_f16(m, n, N, K, T, off.data(), A.data(), lda, w, bp, act, rp,
                                                        uk.f16_acc_chunk));
              const f16_t g = got[size_t(m * ldc + n)];
              const bool both_nan = std::isnan(f16_to_f32(g)) && std::isnan(f16_to_f32(want));
              if (g.bits != want.bits && !both_nan) {
                std::printf("FAIL %s vs the chunked fp16 arithmetic M=%lld N=%lld K=%lld T=%d act=%s res=%d: (%lld, "
                            "%lld) 0x%04x vs 0x%04x\n", uk.name, (long long)M, (long long)N, (long long)K, T,
                            act_name(act), int(res), (long long)m, (long long)n, g.bits, want.bits);
                ++failures;
                ok = false;
              }
            }
        }
  std::printf("%s: %d cases bit for bit with the chunked fp16 arithmetic (chunk %d)\n", uk.name, cases,
              uk.f16_acc_chunk);
}

int main(int argc, char** argv) {
  const std::string group = argc > 1 ? argv[1] : "all";
  if (group == "pack" || group == "all") test_pack_block();
  if (group == "convert" || group == "all") {
    test_convert<bf16_t>();
    test_convert<f16_t>();
  }
  // the scalar oracle itself on a hand-computed case: 2 pixels, K = 3 (odd: a zero-padded pair), 2 columns
  {
    const float wf[6] = {1, -1, 2, 0.5f, -2, 1};  // [k][n]
    const float af[6] = {1, 2, 3, 4, 5, 6};
    bf16_t a[6], c[4], packed[3 * 2 * 32 * 2];
    for (int i = 0; i < 6; ++i) a[i] = f32_to_bf16(af[i]);
    lp_pack(kPackBf16Kpair32, 1, 3, 2, wf, 2, packed);
    const float bias[2] = {0.5f, -100.f};
    const int64_t off0 = 0;
    bf16_conv_nhwc__scalar(2, 2, 3, 1, &off0, a, 3, packed, lp_slab_stride(kPackBf16Kpair32, 1, 3), c, 2, bias,
                           Act::Relu, nullptr, 0);
    // row 0: 1*1 + 2*2 + 3*(-2) + 0.5 = -0.5 -> 0; 1*(-1) + 2*0.5 + 3*1 - 100 < 0 -> 0
    // row 1: 4 + 10 - 12 + 0.5 = 2.5; -4 + 2.5 + 6 - 100 < 0 -> 0
    const float want[4] = {0.f, 0.f, 2.5f, 0.f};
    ++checks;
    for (int i = 0; i < 4; ++i)
      if (bf16_to_f32(c[i]) != want[i]) {
        std::printf("FAIL scalar bf16 conv oracle %d: %g\n", i, bf16_to_f32(c[i]));
        ++failures;
      }
  }
  if (group == "conv" || group == "all")
    for (LpIsa isa : {LpIsa::NeonFp16, LpIsa::NeonFp16Emu, LpIsa::Avx512Fp16, LpIsa::Avx512Fp16Emu})
      if (const LpUKernels<f16_t>* uk = lp_ukernels_for<f16_t>(isa)) test_f16_arithmetic(*uk);
  std::string native, emulated, skipped;
  static const LpIsa bf16_isas[] = {LpIsa::Scalar, LpIsa::Avx2,   LpIsa::Avx512F,        LpIsa::Avx512Bf16, LpIsa::Amx,
                                    LpIsa::AmxEmu, LpIsa::AmxEmuPortable, LpIsa::Neon,     LpIsa::NeonBf16};
  static const LpIsa f16_isas[] = {LpIsa::Scalar, LpIsa::NeonFp16, LpIsa::NeonFp16Emu, LpIsa::Avx512Fp16,
                                   LpIsa::Avx512Fp16Emu};
  int tables = 0;
  if (group != "convert") {
    tables += run_tables<bf16_t>(group, bf16_isas, sizeof bf16_isas / sizeof bf16_isas[0], native, emulated, skipped);
    tables += run_tables<f16_t>(group, f16_isas, sizeof f16_isas / sizeof f16_isas[0], native, emulated, skipped);
  }
  std::printf("native:%s\nemulated (AMX tile emulation, fp16 arithmetic emulations):%s\nskipped:%s\n", native.c_str(),
              emulated.c_str(), skipped.empty() ? " none" : skipped.c_str());
  std::printf("default tables: bf16 %s, f16 %s\n", lp_ukernels<bf16_t>().name, lp_ukernels<f16_t>().name);
#if defined(__x86_64__) || defined(_M_X64)
  if (lp_ukernels_for<bf16_t>(LpIsa::Avx512Bf16))
    std::printf("avx512bf16 dot rate (vdpbf16ps / fma multiply-adds): %.2f\n", avx512bf16_dot_rate());
#endif
  std::printf("%d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
