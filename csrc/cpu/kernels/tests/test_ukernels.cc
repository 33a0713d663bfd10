// Self-checking tests of every SIMD microkernel table compiled in and supported here (AVX2+FMA natively on
// x86-64, NEON on aarch64 / under qemu-aarch64) against the scalar fallback, over the edge-case battery.
// Usage: test_ukernels {gemm|dwconv|transpose|pwconv_nhwc|dwconv_nhwc|conv_nhwc|nan|tiles|all}.
// Exit status 0 = all passed; failures are printed.
// (.cc, not .cpp: setup.py globs csrc/cpu/kernels/**/*.cpp into the torch extension; this has a main.)
//
// Every output buffer is poisoned with NaN (and has a poisoned margin past each row and after the end):
// elements the kernel must write are compared with the oracle, every other element must still be NaN.
// Inputs live in exactly-sized heap buffers, so the sanitizer build catches any read out of bounds.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../interface/ukernels.h"

using namespace mnv4::cpu;

static std::mt19937 rng(12345);
static int failures = 0, checks = 0;
static const float kNaN = std::numeric_limits<float>::quiet_NaN();

static std::vector<float> rand_vec(size_t n) {
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
static std::vector<float> abs_vec(const std::vector<float>& v) {
  std::vector<float> a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(v[i]);
  return a;
}
static const char* act_name(Act a) { return a == Act::Relu ? "relu" : a == Act::Gelu ? "gelu" : "none"; }

// got vs want where `inside(i)`; NaN elsewhere. tol_i = rel * mag[i] + 1e-7 (mag: the sum of |terms|).
template <class Inside>
static bool compare(const std::vector<float>& got, const std::vector<float>& want, const std::vector<float>& mag,
                    float rel, Inside inside, const std::string& what) {
  ++checks;
  for (size_t i = 0; i < got.size(); ++i) {
    if (inside(i)) {
      const float tol = rel * mag[i] + 1e-7f;
      if (!(std::fabs(got[i] - want[i]) <= tol)) {
        std::printf("FAIL %s: element %zu = %g, want %g (tol %g)\n", what.c_str(), i, got[i], want[i], tol);
        ++failures;
        return false;
      }
    } else if (!std::isnan(got[i])) {
      std::printf("FAIL %s: element %zu outside the output was written (%g)\n", what.c_str(), i, got[i]);
      ++failures;
      return false;
    }
  }
  return true;
}

static void test_gemm(const UKernels& uk) {
  const int64_t Ms[] = {1, 2, 5, 6, 7, 11, 12, 13};
  const int64_t Ns[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 40, 72};  // 40, 72: 32-column tiles + 8
  const int64_t Ks[] = {0, 1, 3, 16, 37};
  int cases = 0;
  for (int64_t M : Ms)
    for (int64_t N : Ns)
      for (int64_t K : Ks)
        for (int variant = 0; variant < 6; ++variant) {
          const Act act = static_cast<Act>(variant % 3);
          const bool res = variant >= 3, has_bias = (M + N + variant) % 4 != 0;
          const int64_t lda = K + (variant & 1), ldb = N + (variant % 3), ldc = N + 1 + (variant & 1),
                        ldr = N + (variant % 2) * 3;
          auto A = rand_vec(M * lda + 1), B = rand_vec(std::max<int64_t>(K, 1) * ldb), bias = rand_vec(M),
               R = rand_vec(M * ldr);
          std::vector<float> want(M * ldc + 5, kNaN), got(M * ldc + 5, kNaN), mag(M * ldc + 5, kNaN);
          const float* rp = res ? R.data() : nullptr;
          const float* bp = has_bias ? bias.data() : nullptr;
          f32_gemm__scalar(M, N, K, A.data(), lda, B.data(), ldb, want.data(), ldc, bp, act, rp, ldr);
          auto aA = abs_vec(A), aB = abs_vec(B), ab = abs_vec(bias), aR = abs_vec(R);
          f32_gemm__scalar(M, N, K, aA.data(), lda, aB.data(), ldb, mag.data(), ldc, has_bias ? ab.data() : nullptr,
                           Act::None, res ? aR.data() : nullptr, ldr);
          uk.gemm(M, N, K, A.data(), lda, B.data(), ldb, got.data(), ldc, bp, act, rp, ldr);
          char what[200];
          std::snprintf(what, sizeof what, "%s gemm M=%lld N=%lld K=%lld act=%s res=%d bias=%d", uk.name,
                        (long long)M, (long long)N, (long long)K, act_name(act), res, has_bias);
          compare(got, want, mag, 2.5e-7f * (K + 3), [&](size_t i) {
            return i < size_t(M * ldc) && int64_t(i % ldc) < N; }, what);
          ++cases;
        }
  // in-place residual (C == R) and one larger product
  for (int64_t M : {6, 64}) {
    const int64_t N = 200, K = 256;
    auto A = rand_vec(M * K), B = rand_vec(K * N), bias = rand_vec(M), R = rand_vec(M * N);
    std::vector<float> want(M * N), got = R, mag(M * N);
    f32_gemm__scalar(M, N, K, A.data(), K, B.data(), N, want.data(), N, bias.data(), Act::Relu, R.data(), N);
    auto aA = abs_vec(A), aB = abs_vec(B), ab = abs_vec(bias), aR = abs_vec(R);
    f32_gemm__scalar(M, N, K, aA.data(), K, aB.data(), N, mag.data(), N, ab.data(), Act::None, aR.data(), N);
    uk.gemm(M, N, K, A.data(), K, B.data(), N, got.data(), N, bias.data(), Act::Relu, got.data(), N);
    compare(got, want, mag, 2.5e-7f * (K + 3), [](size_t) { return true; },
            std::string(uk.name) + " gemm in-place residual M=" + std::to_string(M));
    ++cases;
  }
  std::printf("%s gemm: %d cases\n", uk.name, cases);
}

static void test_dwconv(const UKernels& uk) {
  int cases = 0;
  for (int64_t C : {1, 3, 8, 9})
    for (int k : {1, 3, 5, 7})
      for (int s : {1, 2})
        for (int64_t H : {1, 2, 5, 8})
          for (int64_t Wd : {1, 2, 7, 8, 9, 16, 17, 33})
            for (int band = 0; band < 2; ++band) {
              const Act act = static_cast<Act>((C + k + H + Wd + band) % 3);
              const bool has_bias = (Wd + band) % 3 != 0;
              const int p = k / 2;
              const int64_t Ho = (H - 1) / s + 1, Wo = (Wd - 1) / s + 1;
              // band 0: every output row; band 1: rows [Ho/3, Ho/3 + (Ho+1)/2) from only the rows they need
              const int64_t oy0 = band ? Ho / 3 : 0, oy1 = band ? std::min(Ho, oy0 + (Ho + 1) / 2) : Ho;
              const int64_t r0 = std::max<int64_t>(0, oy0 * s - p), r1 = std::min<int64_t>(H, (oy1 - 1) * s + p + 1);
              const int64_t in_rs = Wd + (band ? 3 : 0), in_cs = (r1 - r0) * in_rs + (band ? 1 : 0);
              auto full = rand_vec(C * H * Wd);
              std::vector<float> in(C * in_cs - (band ? 1 : 0)), ain(in.size());
              for (int64_t c = 0; c < C; ++c)
                for (int64_t y = r0; y < r1; ++y)
                  for (int64_t x = 0; x < Wd; ++x) {
                    in[c * in_cs + (y - r0) * in_rs + x] = full[(c * H + y) * Wd + x];
                    ain[c * in_cs + (y - r0) * in_rs + x] = std::fabs(full[(c * H + y) * Wd + x]);
                  }
              auto w = rand_vec(C * k * k), bias = rand_vec(C);
              auto aw = abs_vec(w), ab = abs_vec(bias);
              const int64_t out_rs = Wo + (band ? 2 : 0), out_cs = (oy1 - oy0) * out_rs + 1;
              const size_t on = C * out_cs + 3;
              std::vector<float> want(on, kNaN), got(on, kNaN), mag(on, kNaN);
              std::vector<float> scratch(f32_dwconv_scratch_floats(k, s, Wd, oy1 - oy0));
              const float* bp = has_bias ? bias.data() : nullptr;
              f32_dwconv__scalar(C, k, s, in.data(), in_cs, in_rs, r0, H, Wd, w.data(), bp, act, want.data(), out_cs,
                                 out_rs, oy0, oy1, nullptr);
              f32_dwconv__scalar(C, k, s, ain.data(), in_cs, in_rs, r0, H, Wd, aw.data(), has_bias ? ab.data() : nullptr,
                                 Act::None, mag.data(), out_cs, out_rs, oy0, oy1, nullptr);
              uk.dwconv(C, k, s, in.data(), in_cs, in_rs, r0, H, Wd, w.data(), bp, act, got.data(), out_cs, out_rs,
                        oy0, oy1, scratch.data());
              char what[200];
              std::snprintf(what, sizeof what, "%s dwconv C=%lld k=%d s=%d H=%lld W=%lld rows=[%lld,%lld) act=%s",
                            uk.name, (long long)C, k, s, (long long)H, (long long)Wd, (long long)oy0, (long long)oy1,
                            act_name(act));
              compare(got, want, mag, 2.5e-7f * (k * k + 3), [&](size_t i) {
                if (i >= size_t(C * out_cs)) return false;
                const int64_t j = i % out_cs;
                return j < (oy1 - oy0) * out_rs && j % out_rs < Wo; }, what);
              ++cases;
            }
  std::printf("%s dwconv: %d cases\n", uk.name, cases);
}

// Floats spanned by `rows` rows of `cols` valid elements `ld` apart (the last row unpadded): exactly-sized
// buffers, so the sanitizer build catches a read past the last valid element. At least 1 (a valid pointer).
static size_t span(int64_t rows, int64_t ld, int64_t cols) {
  return rows > 0 && cols > 0 ? size_t((rows - 1) * ld + cols) : 1;
}
// rows x cols random values `ld` apart, NaN in the padding between rows (a kernel that uses it poisons C).
static std::vector<float> rand_strided(int64_t rows, int64_t ld, int64_t cols) {
  std::vector<float> v(span(rows, ld, cols), kNaN);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) v[r * ld + c] = d(rng);
  return v;
}

// B [K][ldb] packed into column slabs of nr (each K x nr, zero-padded): B(k, n) at [(n/nr)*K*nr + k*nr + n%nr].
static std::vector<float> pack_slabs(const std::vector<float>& B, int64_t K, int64_t N, int64_t ldb, int64_t nr) {
  const int64_t slabs = (N + nr - 1) / nr;
  std::vector<float> p(static_cast<size_t>(slabs * K * nr), 0.f);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) p[(n / nr) * K * nr + k * nr + n % nr] = B[k * ldb + n];
  return p;
}

static void test_pwconv_nhwc(const UKernels& uk) {
  const int64_t nr = uk.conv_nhwc_tile.nr;  // B's slab width for this table: plain row-major B has bss = nr
  const int64_t Ms[] = {1, 2, 5, 6, 7, 11, 12, 13, 16, 23, 49, 64};  // 49, 64: the 7x7 / 8x8 planes
  const int64_t Ns[] = {1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 33, 40};
  const int64_t Ks[] = {0, 1, 3, 16, 37};
  int cases = 0;
  for (int64_t M : Ms)
    for (int64_t N : Ns)
      for (int64_t K : Ks)
        for (int variant = 0; variant < 9; ++variant) {
          // every act x {no residual, residual, in-place residual C == R}; strides cycle tight / padded
          const Act act = static_cast<Act>(variant % 3);
          const int res = variant / 3;  // 0: none, 1: separate R, 2: C == R with ldr == ldc
          const bool has_bias = (M + N + K + variant) % 3 != 0;
          static const int64_t pa[] = {0, 1, 4}, pb[] = {0, 1, 3}, pc[] = {0, 2, 1}, pr[] = {0, 3};
          const int64_t lda = K + pa[(variant + M) % 3], ldb = N + pb[(variant + K) % 3],
                        ldc = N + pc[(variant + N) % 3], ldr = res == 2 ? ldc : N + pr[(variant + M + N) % 2];
          auto A = rand_strided(M, lda, K), B = rand_strided(K, ldb, N), bias = rand_vec(N),
               R = rand_strided(M, ldr, N);
          const size_t cn = M * ldc + 5;
          std::vector<float> want(cn, kNaN), got(cn, kNaN), mag(cn, kNaN);
          const float* bp = has_bias ? bias.data() : nullptr;
          const float* rp = res ? R.data() : nullptr;
          f32_pwconv_nhwc__scalar(M, N, K, A.data(), lda, B.data(), ldb, 1, want.data(), ldc, bp, act, rp, ldr);
          auto aA = abs_vec(A), aB = abs_vec(B), ab = abs_vec(bias), aR = abs_vec(R);
          f32_pwconv_nhwc__scalar(M, N, K, aA.data(), lda, aB.data(), ldb, 1, mag.data(), ldc,
                                  has_bias ? ab.data() : nullptr, Act::None, res ? aR.data() : nullptr, ldr);
          // every other case: B packed in slabs (ldb = nr, bss = K * nr), the layout of the weight cache; half
          // of those read rows [2, 2 + K) of a packed matrix with 3 more (NaN) rows, as a caller that slices
          // the weight's input channels does (bss = (K + 3) * nr)
          const bool packed = (M + N + K + variant) % 2 == 0, sliced = packed && (M + variant) % 2 == 0;
          std::vector<float> Bs;
          if (sliced) {
            Bs.assign(span(K + 3, ldb, N), kNaN);
            for (int64_t k = 0; k < K; ++k)
              for (int64_t n = 0; n < N; ++n) Bs[(k + 2) * ldb + n] = B[k * ldb + n];
          }
          const std::vector<float> Bp = !packed ? std::vector<float>()
                                        : sliced ? pack_slabs(Bs, K + 3, N, ldb, nr)
                                                 : pack_slabs(B, K, N, ldb, nr);
          const float* b = !packed ? B.data() : sliced ? Bp.data() + 2 * nr : Bp.data();
          const int64_t ldb_k = packed ? nr : ldb, bss = !packed ? nr : sliced ? (K + 3) * nr : K * nr;
          if (res == 2) {  // C starts as the residual (NaN between rows and after the end)
            for (int64_t m = 0; m < M; ++m)
              for (int64_t n = 0; n < N; ++n) got[m * ldc + n] = R[m * ldr + n];
            uk.pwconv_nhwc(M, N, K, A.data(), lda, b, ldb_k, bss, got.data(), ldc, bp, act, got.data(), ldc);
          } else {
            uk.pwconv_nhwc(M, N, K, A.data(), lda, b, ldb_k, bss, got.data(), ldc, bp, act, rp, ldr);
          }
          char what[240];
          std::snprintf(what, sizeof what,
                        "%s pwconv_nhwc M=%lld N=%lld K=%lld act=%s res=%s bias=%d lda=%lld ldb=%lld ldc=%lld ldr=%lld"
                        " packed=%d sliced=%d",
                        uk.name, (long long)M, (long long)N, (long long)K, act_name(act),
                        res == 0 ? "none" : res == 1 ? "separate" : "in-place", has_bias, (long long)lda,
                        (long long)ldb, (long long)ldc, (long long)ldr, int(packed), int(sliced));
          compare(got, want, mag, 2.5e-7f * (K + 3), [&](size_t i) {
            return i < size_t(M * ldc) && int64_t(i % ldc) < N; }, what);
          ++cases;
        }
  // larger products (several full column slabs and row tiles, a masked tail; M = 700: row blocks of 192
  // with a longer last one), in place
  for (int64_t M : {100, 700, 701}) {  // 701: packed B
    const int64_t N = 200, K = 96, lda = K + 2, ldb = N + 8, ldc = N + 3;
    const bool packed = M == 701;
    auto A = rand_strided(M, lda, K), B = rand_strided(K, ldb, N), bias = rand_vec(N), R = rand_strided(M, ldc, N);
    std::vector<float> want(M * ldc + 5, kNaN), got = want, mag = want;
    f32_pwconv_nhwc__scalar(M, N, K, A.data(), lda, B.data(), ldb, 1, want.data(), ldc, bias.data(), Act::Gelu,
                            R.data(), ldc);
    auto aA = abs_vec(A), aB = abs_vec(B), ab = abs_vec(bias), aR = abs_vec(R);
    f32_pwconv_nhwc__scalar(M, N, K, aA.data(), lda, aB.data(), ldb, 1, mag.data(), ldc, ab.data(), Act::None,
                            aR.data(), ldc);
    std::copy(R.begin(), R.end(), got.begin());
    const std::vector<float> Bp = packed ? pack_slabs(B, K, N, ldb, nr) : std::vector<float>();
    uk.pwconv_nhwc(M, N, K, A.data(), lda, packed ? Bp.data() : B.data(), packed ? nr : ldb, packed ? K * nr : nr,
                   got.data(), ldc, bias.data(), Act::Gelu, got.data(), ldc);
    compare(got, want, mag, 2.5e-7f * (K + 3), [&](size_t i) { return i < size_t(M * ldc) && int64_t(i % ldc) < N; },
            std::string(uk.name) + " pwconv_nhwc in-place residual N=200 K=96 M=" + std::to_string(M));
    ++cases;
  }
  std::printf("%s pwconv_nhwc: %d cases\n", uk.name, cases);
}

// The table's declared register tiles against its kernels. conv_nhwc_tile.nr is the slab width of a packed
// B: with B packed in slabs of the declared width and N = nr + 1 columns (a second slab of one column), a
// declared width other than the kernel's reads the wrong columns. Rows M = mr + 1 start a second row tile.
// The gemm kernel's tile only shapes its loops: the same edges, checked for results.
static void test_tiles(const UKernels& uk) {
  int cases = 0;
  const int64_t nr = uk.conv_nhwc_tile.nr, mr = uk.conv_nhwc_tile.mr;
  for (int64_t K : {1, 7, 32})
    for (int64_t N : {nr, nr + 1, 2 * nr + 1})
      for (int64_t M : {mr, mr + 1}) {
        auto A = rand_strided(M, K, K), B = rand_strided(K, N, N), bias = rand_vec(N);
        std::vector<float> want(M * N, kNaN), got(M * N, kNaN), mag(M * N, kNaN);
        f32_pwconv_nhwc__scalar(M, N, K, A.data(), K, B.data(), N, 1, want.data(), N, bias.data(), Act::Relu,
                                nullptr, 0);
        auto aA = abs_vec(A), aB = abs_vec(B), ab = abs_vec(bias);
        f32_pwconv_nhwc__scalar(M, N, K, aA.data(), K, aB.data(), N, 1, mag.data(), N, ab.data(), Act::None, nullptr,
                                0);
        const std::vector<float> Bp = pack_slabs(B, K, N, N, nr);
        uk.pwconv_nhwc(M, N, K, A.data(), K, Bp.data(), nr, K * nr, got.data(), N, bias.data(), Act::Relu, nullptr, 0);
        compare(got, want, mag, 2.5e-7f * (K + 3), [](size_t) { return true; },
                std::string(uk.name) + " conv_nhwc_tile " + std::to_string(mr) + "x" + std::to_string(nr) +
                    " (M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + ")");
        ++cases;
      }
  const int64_t gm = uk.gemm_tile.mr, gn = uk.gemm_tile.nr;
  for (int64_t K : {1, 32})
    for (int64_t N : {gn, gn + 1, 2 * gn + 1})
      for (int64_t M : {gm, gm + 1}) {
        auto A = rand_vec(M * K), B = rand_vec(K * N), bias = rand_vec(M);
        std::vector<float> want(M * N, kNaN), got(M * N, kNaN), mag(M * N, kNaN);
        f32_gemm__scalar(M, N, K, A.data(), K, B.data(), N, want.data(), N, bias.data(), Act::Relu, nullptr, 0);
        auto aA = abs_vec(A), aB = abs_vec(B), ab = abs_vec(bias);
        f32_gemm__scalar(M, N, K, aA.data(), K, aB.data(), N, mag.data(), N, ab.data(), Act::None, nullptr, 0);
        uk.gemm(M, N, K, A.data(), K, B.data(), N, got.data(), N, bias.data(), Act::Relu, nullptr, 0);
        compare(got, want, mag, 2.5e-7f * (K + 3), [](size_t) { return true; },
                std::string(uk.name) + " gemm_tile (M=" + std::to_string(M) + " N=" + std::to_string(N) + ")");
        ++cases;
      }
  std::printf("%s tiles: conv_nhwc %dx%d (%s), gemm %dx%d (%s), dwconv %s, dwconv_nhwc %s, transpose %s: %d cases\n",
              uk.name, int(mr), int(nr), uk.isa_of.conv_nhwc, int(gm), int(gn), uk.isa_of.gemm, uk.isa_of.dwconv,
              uk.isa_of.dwconv_nhwc, uk.isa_of.transpose, cases);
}

// Dense k x k conv as taps (f32_conv_nhwc_fn) over a zero-padded row band: rows*Wp pixels, pixel stride ps
// >= Cin (NaN between pixels: a read of the gap poisons C), M output pixels of one row at stride s. The
// expected values come from a direct loop over the band (no kernel); the scalar oracle is checked too.
static void test_conv_nhwc(const UKernels& uk) {
  const int64_t nr = uk.conv_nhwc_tile.nr;
  int cases = 0;
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (int k : {1, 3, 5})
    for (int s : {1, 2})
      for (int64_t Cin : {1, 3, 8, 17, 32})
        for (int64_t N : {1, 7, 16, 24, 33, 48})
          for (int64_t M : {1, 5, 7, 13, 56}) {
            const int variant = cases % 6;
            const Act act = static_cast<Act>(variant % 3);
            const bool res = variant >= 3, has_bias = (Cin + N + M) % 4 != 0;
            const int64_t ps = Cin + (cases % 2), Wp = (M - 1) * s + k + (cases % 3), T = int64_t(k) * k;
            const int64_t ldc = N + (cases % 3), ldr = N + 1, Kt = T * Cin;
            std::vector<float> band(size_t(k * Wp * ps), kNaN);
            for (int64_t p = 0; p < k * Wp; ++p)
              for (int64_t c = 0; c < Cin; ++c) band[p * ps + c] = d(rng);
            std::vector<int64_t> off(T);
            for (int ky = 0; ky < k; ++ky)
              for (int kx = 0; kx < k; ++kx) off[ky * k + kx] = (ky * Wp + kx) * ps;
            auto B = rand_strided(Kt, N, N), bias = rand_vec(N), R = rand_strided(M, ldr, N);
            const float* bp = has_bias ? bias.data() : nullptr;
            std::vector<float> want(M * ldc + 3, kNaN), mag = want, got = want, sc = want;
            for (int64_t m = 0; m < M; ++m)
              for (int64_t n = 0; n < N; ++n) {
                double acc = bp ? bp[n] : 0.0, am = bp ? std::fabs(bp[n]) : 0.0;
                for (int ky = 0; ky < k; ++ky)
                  for (int kx = 0; kx < k; ++kx)
                    for (int64_t c = 0; c < Cin; ++c) {
                      const double a = band[((ky * Wp) + m * s + kx) * ps + c];
                      const double b = B[((ky * k + kx) * Cin + c) * N + n];
                      acc += a * b;
                      am += std::fabs(a * b);
                    }
                float y = act == Act::Relu ? std::max(0.f, float(acc)) : act == Act::Gelu ? gelu_exact(float(acc))
                                                                                          : float(acc);
                if (res) y += R[m * ldr + n], am += std::fabs(R[m * ldr + n]);
                want[m * ldc + n] = y;
                mag[m * ldc + n] = float(am);
              }
            const float* rp = res ? R.data() : nullptr;
            f32_conv_nhwc__scalar(M, N, Cin, int(T), off.data(), band.data(), s * ps, B.data(), N, 1, sc.data(), ldc,
                                  bp, act, rp, ldr);
            const bool packed = cases % 2 == 0;  // the weight cache's slabs, else row-major in place
            const std::vector<float> Bp = packed ? pack_slabs(B, Kt, N, N, nr) : std::vector<float>();
            uk.conv_nhwc(M, N, Cin, int(T), off.data(), band.data(), s * ps, packed ? Bp.data() : B.data(),
                         packed ? nr : N, packed ? Kt * nr : nr, got.data(), ldc, bp, act, rp, ldr);
            char what[200];
            std::snprintf(what, sizeof what,
                          "%s conv_nhwc k=%d s=%d Cin=%lld N=%lld M=%lld act=%s res=%d bias=%d packed=%d",
                          uk.name, k, s, (long long)Cin, (long long)N, (long long)M, act_name(act), int(res),
                          int(has_bias), int(packed));
            auto inside = [&](size_t i) { return i < size_t(M * ldc) && int64_t(i % ldc) < N; };
            compare(sc, want, mag, 2.5e-7f * (Kt + 3), inside, std::string("scalar oracle: ") + what);
            compare(got, want, mag, 2.5e-7f * (Kt + 3), inside, what);
            ++cases;
          }
  std::printf("%s conv_nhwc: %d cases\n", uk.name, cases);
}

static void test_dwconv_nhwc(const UKernels& uk) {
  int cases = 0, idx = 0;
  for (int64_t C : {1, 3, 4, 5, 8, 9, 15, 16, 17, 24, 33})
    for (int k : {1, 3, 5, 7})
      for (int s : {1, 2})
        for (int64_t H : {1, 2, 5, 8})
          for (int64_t Wd : {1, 2, 3, 4, 5, 7, 8, 9, 13, 17, 29})
            for (int band = 0; band < 3; ++band, ++idx) {
              const Act act = static_cast<Act>((C + k + H + Wd + band) % 3);
              const bool has_bias = idx % 4 != 1;
              const int p = k / 2;
              const int64_t Ho = (H - 1) / s + 1, Wo = (Wd - 1) / s + 1;
              // band 0: every output row; 1: rows [Ho/3, Ho/3 + (Ho+1)/2); 2: the last row; 1 and 2 from only
              // the input rows they need (in_r0 > 0 when the band starts low enough in the image)
              const int64_t oy0 = band == 0 ? 0 : band == 1 ? Ho / 3 : Ho - 1,
                            oy1 = band == 1 ? std::min(Ho, oy0 + (Ho + 1) / 2) : Ho;
              const int64_t r0 = std::max<int64_t>(0, oy0 * s - p), r1 = std::min<int64_t>(H, (oy1 - 1) * s + p + 1);
              // strides: tight or padded, cycled with the case index
              static const int64_t pps[] = {0, 1, 3}, prs[] = {0, 2, 5, 0}, pw[] = {0, 1, 5}, pop[] = {0, 2, 1},
                                   por[] = {0, 3, 1};
              const int64_t in_ps = C + pps[idx % 3], in_rs = Wd * in_ps + prs[(idx / 3) % 4],
                            ldw = C + pw[(idx / 2) % 3], out_ps = C + pop[(idx / 4) % 3],
                            out_rs = Wo * out_ps + por[(idx / 5) % 3];
              // only rows [r0, r1) stored, NaN between pixels and rows, nothing after the last valid channel
              std::vector<float> in((r1 - r0 - 1) * in_rs + (Wd - 1) * in_ps + C, kNaN);  // r1 > r0 always
              std::uniform_real_distribution<float> d(-1.f, 1.f);
              for (int64_t y = r0; y < r1; ++y)
                for (int64_t x = 0; x < Wd; ++x)
                  for (int64_t c = 0; c < C; ++c) in[(y - r0) * in_rs + x * in_ps + c] = d(rng);
              auto ain = abs_vec(in);
              auto w = rand_strided(k * k, ldw, C), bias = rand_vec(C);
              auto aw = abs_vec(w), ab = abs_vec(bias);
              const int64_t rows = oy1 - oy0;
              const size_t on = rows * out_rs + 3;
              std::vector<float> want(on, kNaN), got(on, kNaN), mag(on, kNaN);
              const float* bp = has_bias ? bias.data() : nullptr;
              f32_dwconv_nhwc__scalar(C, k, s, in.data(), in_ps, in_rs, r0, H, Wd, w.data(), ldw, bp, act,
                                      want.data(), out_ps, out_rs, oy0, oy1);
              f32_dwconv_nhwc__scalar(C, k, s, ain.data(), in_ps, in_rs, r0, H, Wd, aw.data(), ldw,
                                      has_bias ? ab.data() : nullptr, Act::None, mag.data(), out_ps, out_rs, oy0, oy1);
              uk.dwconv_nhwc(C, k, s, in.data(), in_ps, in_rs, r0, H, Wd, w.data(), ldw, bp, act, got.data(), out_ps,
                             out_rs, oy0, oy1);
              char what[300];
              std::snprintf(what, sizeof what,
                            "%s dwconv_nhwc C=%lld k=%d s=%d H=%lld W=%lld rows=[%lld,%lld) in_r0=%lld act=%s bias=%d "
                            "in_ps=%lld in_rs=%lld ldw=%lld out_ps=%lld out_rs=%lld",
                            uk.name, (long long)C, k, s, (long long)H, (long long)Wd, (long long)oy0, (long long)oy1,
                            (long long)r0, act_name(act), has_bias, (long long)in_ps, (long long)in_rs,
                            (long long)ldw, (long long)out_ps, (long long)out_rs);
              compare(got, want, mag, 2.5e-7f * (k * k + 3), [&](size_t i) {
                if (i >= size_t(rows * out_rs)) return false;
                const int64_t j = i % out_rs;
                return j < Wo * out_ps && j % out_ps < C; }, what);
              ++cases;
            }
  std::printf("%s dwconv_nhwc: %d cases\n", uk.name, cases);
}

static void test_transpose(const UKernels& uk) {
  int cases = 0;
  for (int64_t rows : {1, 3, 4, 7, 8, 9, 16, 17, 33})
    for (int64_t cols : {1, 2, 5, 8, 9, 15, 16, 24, 25})
      for (int pad = 0; pad < 2; ++pad) {
        const int64_t lds = cols + pad * 3, ldd = rows + pad;
        auto src = rand_vec(rows * lds);
        std::vector<float> want(cols * ldd + 2, kNaN), got(cols * ldd + 2, kNaN), mag(cols * ldd + 2, 0.f);
        x32_transpose__scalar(rows, cols, src.data(), lds, want.data(), ldd);
        uk.transpose(rows, cols, src.data(), lds, got.data(), ldd);
        compare(got, want, mag, 0.f, [&](size_t i) { return i < size_t(cols * ldd) && int64_t(i % ldd) < rows; },
                std::string(uk.name) + " transpose " + std::to_string(rows) + "x" + std::to_string(cols));
        ++cases;
      }
  std::printf("%s transpose: %d cases\n", uk.name, cases);
}

// ---- NaN and infinity (ukernels.h, "NaN semantics") ----
// Each kernel on inputs with a NaN in the activations, a NaN weight on a corner tap (outside the image at the
// borders: torch's conv skips it there), another one inside, a NaN bias or residual, an infinite weight. The
// expectation is a direct double-precision loop over the taps inside the image (not a kernel), and the scalar
// oracle and each SIMD table must both give NaN exactly where it is NaN, the same infinity where it is
// infinite, and the usual tolerance elsewhere.

static double act_double(double v, Act act) {
  if (act == Act::Relu) return v < 0 ? 0.0 : v;  // NaN stays NaN, as torch.relu
  if (act == Act::Gelu) return 0.5 * v * (1.0 + std::erf(v * 0.70710678118654752440));  // gelu(-inf) = NaN
  return v;
}

static int64_t pick(int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(rng); }

// got against the double expectation `want` (its NaN / infinities exactly, finite within rel * mag + 1e-7)
// where inside(i); NaN (untouched) elsewhere.
template <class Inside>
static bool compare_exact_nan(const std::vector<float>& got, const std::vector<double>& want,
                              const std::vector<double>& mag, float rel, Inside inside, const std::string& what) {
  ++checks;
  for (size_t i = 0; i < got.size(); ++i) {
    const char* bad = nullptr;
    if (!inside(i)) {
      if (!std::isnan(got[i])) bad = "outside the output was written";
    } else if (std::isnan(want[i])) {
      if (!std::isnan(got[i])) bad = "must be NaN";
    } else if (std::isinf(want[i])) {
      if (double(got[i]) != want[i]) bad = "must be this infinity";
    } else if (!(std::fabs(got[i] - want[i]) <= rel * mag[i] + 1e-7)) {
      bad = std::isnan(got[i]) ? "NaN where the expectation has none" : "wrong value";
    }
    if (bad) {
      std::printf("FAIL %s: element %zu = %g, want %g (%s)\n", what.c_str(), i, got[i], want[i], bad);
      ++failures;
      return false;
    }
  }
  return true;
}

static const float kInf = std::numeric_limits<float>::infinity();

// The same conv with the kernel's rows as taps (csrc/cpu/conv.cpp's form): k taps of K = k*Cin contiguous
// values (k neighbouring pixels of Cin channels, no gap), lda = s*Cin; the stems' shape (Cin = 3, k = 3, s = 2:
// K = 9, lda = 6) runs the tables' compile-time stem tile (simd_impl.h, StemShape). Each band row is exactly
// as long as the last pixel's window needs, or one pixel longer with NaN there (a read past a window poisons
// C; the sanitizer build catches a read past the band). Row tiles of every remainder of the tall tile; NaN and
// infinities in the band and in B.
static void test_conv_nhwc_rows(const UKernels& uk) {
  const int64_t nr = uk.conv_nhwc_tile.nr;
  int cases = 0;
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (int k : {3, 5})
    for (int s : {1, 2})
      for (int64_t Cin : {1, 3, 4})
        for (int64_t N : {1, 16, 24, 32, 33, 48})
          for (int64_t M : {1, 2, 5, 7, 8, 13, 14, 15, 21, 27, 28, 29, 56, 111}) {
            if (k == 5 && (M % 3 != 0 || Cin == 4)) continue;  // the stems' 3x3 in full, a sample of 5x5
            const int variant = cases % 6;
            const Act act = static_cast<Act>(variant % 3);
            const bool res = variant >= 3, has_bias = (Cin + N + M) % 4 != 0;
            const int64_t Wp = (M - 1) * s + k + (cases % 2), K = k * Cin, Kt = k * K;
            const int64_t ldc = N + (cases % 3), ldr = N + 1;
            std::vector<float> band(size_t(k * Wp * Cin), kNaN);
            for (int ky = 0; ky < k; ++ky)
              for (int64_t x = 0; x < (M - 1) * s + k; ++x)
                for (int64_t c = 0; c < Cin; ++c) band[(ky * Wp + x) * Cin + c] = d(rng);
            auto B = rand_strided(Kt, N, N), bias = rand_vec(N), R = rand_strided(M, ldr, N);
            const int nan = cases % 5;  // 1: NaN in the band, 2: NaN in B, 3: infinity in the band, 4: in B
            if (nan == 1 || nan == 3)
              band[((k / 2) * Wp + (M / 2) * s + k - 1) * Cin + Cin - 1] = nan == 1 ? kNaN : -kInf;
            if (nan == 2 || nan == 4) B[(Kt - 1) * N + N / 2] = nan == 2 ? kNaN : kInf;
            std::vector<int64_t> off(k);
            for (int ky = 0; ky < k; ++ky) off[ky] = ky * Wp * Cin;
            const float* bp = has_bias ? bias.data() : nullptr;
            std::vector<double> want(M * ldc + 3, 0.0), mag = want;
            std::vector<float> got(M * ldc + 3, kNaN), sc = got;
            for (int64_t m = 0; m < M; ++m)
              for (int64_t n = 0; n < N; ++n) {
                double acc = bp ? bp[n] : 0.0, am = bp ? std::fabs(bp[n]) : 0.0;
                for (int t = 0; t < k; ++t)
                  for (int64_t q = 0; q < K; ++q) {
                    const double v = double(band[m * s * Cin + off[t] + q]) * B[(t * K + q) * N + n];
                    acc += v, am += std::fabs(v);
                  }
                double y = act_double(acc, act);
                if (res) y += R[m * ldr + n], am += std::fabs(R[m * ldr + n]);
                want[m * ldc + n] = y;
                mag[m * ldc + n] = am;
              }
            const float* rp = res ? R.data() : nullptr;
            f32_conv_nhwc__scalar(M, N, K, k, off.data(), band.data(), s * Cin, B.data(), N, 1, sc.data(), ldc, bp,
                                  act, rp, ldr);
            // packed slabs, or row-major in place (ldb = N: the stem tile where N == nr)
            const bool packed = (cases / 2) % 2 == 0;
            const std::vector<float> Bp = packed ? pack_slabs(B, Kt, N, N, nr) : std::vector<float>();
            uk.conv_nhwc(M, N, K, k, off.data(), band.data(), s * Cin, packed ? Bp.data() : B.data(),
                         packed ? nr : N, packed ? Kt * nr : nr, got.data(), ldc, bp, act, rp, ldr);
            char what[220];
            std::snprintf(what, sizeof what,
                          "%s conv_nhwc rows k=%d s=%d Cin=%lld N=%lld M=%lld act=%s res=%d bias=%d packed=%d nan=%d",
                          uk.name, k, s, (long long)Cin, (long long)N, (long long)M, act_name(act), int(res),
                          int(has_bias), int(packed), nan);
            auto inside = [&](size_t i) { return i < size_t(M * ldc) && int64_t(i % ldc) < N; };
            compare_exact_nan(sc, want, mag, 2.5e-7f * (Kt + 3), inside, std::string("scalar oracle: ") + what);
            compare_exact_nan(got, want, mag, 2.5e-7f * (Kt + 3), inside, what);
            ++cases;
          }
  std::printf("%s conv_nhwc rows: %d cases\n", uk.name, cases);
}

static void test_nan(const UKernels& uk) {
  int cases = 0;
  // GEMM (channel-major 1x1 conv) and the NHWC pointwise conv: C = act(A B + bias) + R
  for (int nhwc = 0; nhwc < 2; ++nhwc)
    for (int64_t M : {1, 7, 13})
      for (int64_t N : {1, 9, 17, 40})
        for (int64_t K : {1, 16, 37})
          for (int variant = 0; variant < 6; ++variant) {
            const Act act = static_cast<Act>(variant % 3);
            const bool res = variant >= 3;
            auto A = rand_vec(M * K), B = rand_vec(K * N), bias = rand_vec(nhwc ? N : M), R = rand_vec(M * N);
            A[pick(M * K)] = kNaN;
            B[pick(K * N)] = variant % 2 ? kInf : kNaN;
            if (variant % 3 == 1) bias[pick(bias.size())] = kNaN;
            if (res) R[pick(M * N)] = kNaN;
            std::vector<double> want(M * N), mag(M * N);
            for (int64_t m = 0; m < M; ++m)
              for (int64_t n = 0; n < N; ++n) {
                double acc = bias[nhwc ? n : m], am = std::fabs(acc);
                for (int64_t k = 0; k < K; ++k) {
                  const double t = double(A[m * K + k]) * B[k * N + n];
                  acc += t, am += std::fabs(t);
                }
                want[m * N + n] = act_double(acc, act) + (res ? R[m * N + n] : 0.0);
                mag[m * N + n] = am + (res ? std::fabs(R[m * N + n]) : 0.0);
              }
            std::vector<float> sc(M * N + 3, kNaN), got(M * N + 3, kNaN);
            const float* rp = res ? R.data() : nullptr;
            if (nhwc) {
              f32_pwconv_nhwc__scalar(M, N, K, A.data(), K, B.data(), N, 1, sc.data(), N, bias.data(), act, rp, N);
              uk.pwconv_nhwc(M, N, K, A.data(), K, B.data(), N, uk.conv_nhwc_tile.nr, got.data(), N, bias.data(), act, rp, N);
            } else {
              f32_gemm__scalar(M, N, K, A.data(), K, B.data(), N, sc.data(), N, bias.data(), act, rp, N);
              uk.gemm(M, N, K, A.data(), K, B.data(), N, got.data(), N, bias.data(), act, rp, N);
            }
            char what[160];
            std::snprintf(what, sizeof what, "%s %s NaN M=%lld N=%lld K=%lld act=%s res=%d", uk.name,
                          nhwc ? "pwconv_nhwc" : "gemm", (long long)M, (long long)N, (long long)K, act_name(act),
                          int(res));
            auto inside = [&](size_t i) { return i < size_t(M * N); };
            compare_exact_nan(sc, want, mag, 2.5e-7f * (K + 3), inside, std::string("scalar oracle: ") + what);
            compare_exact_nan(got, want, mag, 2.5e-7f * (K + 3), inside, what);
            ++cases;
          }
  // depthwise, both layouts: channel 0 a NaN weight on tap (0, 0), channel 1 an infinite one on tap (k-1, k-1)
  // (variant 1: a NaN one on the centre tap), a NaN activation in the last channel, a NaN bias (variant 2)
  for (int nhwc = 0; nhwc < 2; ++nhwc)
    for (int64_t C : {3, 9, 17})
      for (int k : {3, 5})
        for (int s : {1, 2})
          for (int64_t H : {1, 5, 8})
            for (int64_t Wd : {1, 7, 9, 17}) {
              const int variant = cases % 3;
              const Act act = static_cast<Act>((C + k + s + H + Wd) % 3);
              const int p = k / 2;
              const int64_t Ho = (H - 1) / s + 1, Wo = (Wd - 1) / s + 1, kk = int64_t(k) * k;
              // NCHW: planes [C][H][Wd], weights [C][k][k]; NHWC: pixels [H][Wd][C], weights [k][k][C]
              auto in = rand_vec(C * H * Wd), w = rand_vec(C * kk), bias = rand_vec(C);
              auto at = [&](int64_t c, int64_t y, int64_t x) { return nhwc ? (y * Wd + x) * C + c : (c * H + y) * Wd + x; };
              auto wat = [&](int64_t c, int64_t t) { return nhwc ? t * C + c : c * kk + t; };
              w[wat(0, 0)] = kNaN;
              w[wat(1, variant == 1 ? kk / 2 : kk - 1)] = variant == 1 ? kNaN : kInf;
              in[at(C - 1, pick(H), pick(Wd))] = kNaN;
              if (variant == 2) bias[2] = kNaN;
              std::vector<double> want(C * Ho * Wo), mag(C * Ho * Wo);
              auto oat = [&](int64_t c, int64_t y, int64_t x) { return nhwc ? (y * Wo + x) * C + c : (c * Ho + y) * Wo + x; };
              for (int64_t c = 0; c < C; ++c)
                for (int64_t oy = 0; oy < Ho; ++oy)
                  for (int64_t ox = 0; ox < Wo; ++ox) {
                    double acc = bias[c], am = std::fabs(acc);
                    for (int i = 0; i < k; ++i)
                      for (int j = 0; j < k; ++j) {
                        const int64_t y = oy * s + i - p, x = ox * s + j - p;
                        if (y < 0 || y >= H || x < 0 || x >= Wd) continue;  // skipped, as torch's conv2d does
                        const double t = double(w[wat(c, i * k + j)]) * in[at(c, y, x)];
                        acc += t, am += std::fabs(t);
                      }
                    want[oat(c, oy, ox)] = act_double(acc, act);
                    mag[oat(c, oy, ox)] = am;
                  }
              std::vector<float> sc(want.size() + 3, kNaN), got(want.size() + 3, kNaN);
              if (nhwc) {
                f32_dwconv_nhwc__scalar(C, k, s, in.data(), C, Wd * C, 0, H, Wd, w.data(), C, bias.data(), act,
                                        sc.data(), C, Wo * C, 0, Ho);
                uk.dwconv_nhwc(C, k, s, in.data(), C, Wd * C, 0, H, Wd, w.data(), C, bias.data(), act, got.data(), C,
                               Wo * C, 0, Ho);
              } else {
                std::vector<float> scratch(f32_dwconv_scratch_floats(k, s, Wd, Ho));
                f32_dwconv__scalar(C, k, s, in.data(), H * Wd, Wd, 0, H, Wd, w.data(), bias.data(), act, sc.data(),
                                   Ho * Wo, Wo, 0, Ho, nullptr);
                uk.dwconv(C, k, s, in.data(), H * Wd, Wd, 0, H, Wd, w.data(), bias.data(), act, got.data(), Ho * Wo,
                          Wo, 0, Ho, scratch.data());
              }
              char what[200];
              std::snprintf(what, sizeof what, "%s %s NaN C=%lld k=%d s=%d H=%lld W=%lld act=%s variant=%d", uk.name,
                            nhwc ? "dwconv_nhwc" : "dwconv", (long long)C, k, s, (long long)H, (long long)Wd,
                            act_name(act), variant);
              auto inside = [&](size_t i) { return i < want.size(); };
              compare_exact_nan(sc, want, mag, 2.5e-7f * (kk + 3), inside, std::string("scalar oracle: ") + what);
              compare_exact_nan(got, want, mag, 2.5e-7f * (kk + 3), inside, what);
              ++cases;
            }
  // dense conv as taps: it knows no image (every tap it is given counts), NaN in the band and in B
  for (int k : {1, 3})
    for (int64_t Cin : {3, 17})
      for (int64_t N : {7, 33})
        for (int64_t M : {1, 13}) {
          const Act act = static_cast<Act>(cases % 3);
          const int s = 1 + cases % 2;
          const int64_t Wp = (M - 1) * s + k, T = int64_t(k) * k, Kt = T * Cin;
          auto band = rand_vec(k * Wp * Cin), B = rand_vec(Kt * N), bias = rand_vec(N);
          band[pick(band.size())] = kNaN;
          B[pick(B.size())] = cases % 2 ? kNaN : kInf;
          std::vector<int64_t> off(T);
          for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx) off[ky * k + kx] = (ky * Wp + kx) * Cin;
          std::vector<double> want(M * N), mag(M * N);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              double acc = bias[n], am = std::fabs(acc);
              for (int64_t t = 0; t < T; ++t)
                for (int64_t c = 0; c < Cin; ++c) {
                  const double v = double(band[m * s * Cin + off[t] + c]) * B[(t * Cin + c) * N + n];
                  acc += v, am += std::fabs(v);
                }
              want[m * N + n] = act_double(acc, act);
              mag[m * N + n] = am;
            }
          std::vector<float> sc(M * N + 3, kNaN), got(M * N + 3, kNaN);
          f32_conv_nhwc__scalar(M, N, Cin, int(T), off.data(), band.data(), s * Cin, B.data(), N, 1, sc.data(), N,
                                bias.data(), act, nullptr, 0);
          const std::vector<float> Bp = pack_slabs(B, Kt, N, N, uk.conv_nhwc_tile.nr);
          uk.conv_nhwc(M, N, Cin, int(T), off.data(), band.data(), s * Cin, Bp.data(), uk.conv_nhwc_tile.nr, Kt * uk.conv_nhwc_tile.nr,
                       got.data(), N, bias.data(), act, nullptr, 0);
          char what[160];
          std::snprintf(what, sizeof what, "%s conv_nhwc NaN k=%d s=%d Cin=%lld N=%lld M=%lld act=%s", uk.name, k, s,
                        (long long)Cin, (long long)N, (long long)M, act_name(act));
          auto inside = [&](size_t i) { return i < size_t(M * N); };
          compare_exact_nan(sc, want, mag, 2.5e-7f * (Kt + 3), inside, std::string("scalar oracle: ") + what);
          compare_exact_nan(got, want, mag, 2.5e-7f * (Kt + 3), inside, what);
          ++cases;
        }
  std::printf("%s nan: %d cases\n", uk.name, cases);
}

int main(int argc, char** argv) {
  const std::string group = argc > 1 ? argv[1] : "all";
  // The scalar oracle itself against direct formulas on one small case of each kernel.
  {
    const float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, -1, 2, 0.5f, -2, 1}, bias[2] = {0.5f, -100.f};
    float C[4];
    f32_gemm__scalar(2, 2, 3, A, 3, B, 2, C, 2, bias, Act::Relu, nullptr, 0);
    const float want[4] = {0.f, -1 + 1 + 3 + 0.5f, 0.f, 0.f};  // 1+4-6+0.5 < 0: relu
    for (int i = 0; i < 4; ++i)
      if (std::fabs(C[i] - want[i]) > 1e-6f) { std::printf("FAIL scalar gemm oracle %d\n", i); ++failures; }
    const float img[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[9] = {0, 0, 0, 0, 1, 1, 0, 1, 0};
    float o[4];
    f32_dwconv__scalar(1, 3, 2, img, 9, 3, 0, 3, 3, w, nullptr, Act::None, o, 4, 2, 0, 2, nullptr);
    const float wo[4] = {1 + 2 + 4, 3 + 6, 7 + 8, 9};  // centre + right + below, zero padded, stride 2
    for (int i = 0; i < 4; ++i)
      if (std::fabs(o[i] - wo[i]) > 1e-6f) { std::printf("FAIL scalar dwconv oracle %d\n", i); ++failures; }
    // NHWC pointwise: per-COLUMN bias, relu, then the residual
    const float R[4] = {10, 20, 30, 40}, pbias[2] = {0.5f, -1.f};
    float P[4];
    f32_pwconv_nhwc__scalar(2, 2, 3, A, 3, B, 2, 1, P, 2, pbias, Act::Relu, R, 2);
    const float wp[4] = {0 + 10, 2 + 20, 2.5f + 30, 3.5f + 40};  // pre-act -0.5, 2 | 2.5, 3.5
    for (int i = 0; i < 4; ++i)
      if (std::fabs(P[i] - wp[i]) > 1e-6f) { std::printf("FAIL scalar pwconv_nhwc oracle %d\n", i); ++failures; }
    // NHWC depthwise, 2 channels of the 3x3 image (ch0 = img, ch1 = -img), pixel stride 3, row stride 10,
    // weights [3][3][ldw = 3] (ch0: centre + right + below, ch1: 2 * centre), bias {0, 1}, stride 2
    float nin[29], nw[27], nb[2] = {0, 1}, no[2 * 5 + 2 * 3 + 2];  // out: pixel stride 3, row stride 8 (pads)
    for (float& v : nin) v = kNaN;
    for (float& v : nw) v = kNaN;
    for (float& v : no) v = kNaN;
    for (int y = 0; y < 3; ++y)
      for (int x = 0; x < 3; ++x) nin[y * 10 + x * 3] = img[y * 3 + x], nin[y * 10 + x * 3 + 1] = -img[y * 3 + x];
    for (int t = 0; t < 9; ++t) nw[t * 3] = w[t], nw[t * 3 + 1] = t == 4 ? 2.f : 0.f;
    f32_dwconv_nhwc__scalar(2, 3, 2, nin, 3, 10, 0, 3, 3, nw, 3, nb, Act::None, no, 3, 8, 0, 2);
    const float wn[8] = {7, -1, 9, -5, 15, -13, 9, -17};  // (oy, ox, c): ch1 = 1 - 2 * img
    for (int oy = 0; oy < 2; ++oy)
      for (int ox = 0; ox < 2; ++ox)
        for (int c = 0; c < 2; ++c)
          if (std::fabs(no[oy * 8 + ox * 3 + c] - wn[(oy * 2 + ox) * 2 + c]) > 1e-6f) {
            std::printf("FAIL scalar dwconv_nhwc oracle %d %d %d\n", oy, ox, c); ++failures; }
    // the last output row only, from input rows 1..2 (in_r0 = 1)
    float nlast[5];
    for (float& v : nlast) v = kNaN;
    f32_dwconv_nhwc__scalar(2, 3, 2, nin + 10, 3, 10, 1, 3, 3, nw, 3, nb, Act::None, nlast, 3, 8, 1, 2);
    if (!(nlast[0] == 15 && nlast[1] == -13 && nlast[3] == 9 && nlast[4] == -17 && std::isnan(nlast[2]))) {
      std::printf("FAIL scalar dwconv_nhwc oracle (band)\n"); ++failures; }
  }
  // relu and gelu keep NaN (torch.relu / gelu); relu(-0.5) = 0
  if (!std::isnan(act_scalar(kNaN, Act::Relu)) || !std::isnan(act_scalar(kNaN, Act::Gelu)) ||
      act_scalar(-0.5f, Act::Relu) != 0.f) {
    std::printf("FAIL scalar act_scalar oracle\n");
    ++failures;
  }
  int tables = 0;
  for (Isa isa : {Isa::Avx2Fma, Isa::Avx512, Isa::Neon}) {
    const UKernels* uk = ukernels_for(isa);
    if (!uk) continue;
    ++tables;
    if (group == "gemm" || group == "all") test_gemm(*uk);
    if (group == "dwconv" || group == "all") test_dwconv(*uk);
    if (group == "transpose" || group == "all") test_transpose(*uk);
    if (group == "pwconv_nhwc" || group == "all") test_pwconv_nhwc(*uk);
    if (group == "dwconv_nhwc" || group == "all") test_dwconv_nhwc(*uk);
    if (group == "conv_nhwc" || group == "all") test_conv_nhwc(*uk), test_conv_nhwc_rows(*uk);
    if (group == "nan" || group == "all") test_nan(*uk);
    if (group == "tiles" || group == "all") test_tiles(*uk);
  }
  if (tables == 0) {
    std::printf("FAIL: no SIMD kernel table is available on this CPU/build (nothing was tested)\n");
    return 1;
  }
  std::printf("%d checks, %d failures (%s)\n", checks, failures, ukernels().name);
  return failures ? 1 : 0;
}
