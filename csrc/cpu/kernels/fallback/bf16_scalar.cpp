// Scalar reduced-precision kernels: the oracle of every bf16 / fp16 SIMD kernel (kernels/tests/test_bf16.cc)
// and the tables for CPUs without SIMD support for them. Direct loops, fp32 accumulation, one rounding of each
// output to the storage type. Also the portable conversions and the weight packing (one packer for every
// layout: interface/ukernels_bf16.h). Contracts: interface/ukernels_bf16.h.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../interface/ukernels_bf16.h"

namespace mnv4 {
namespace cpu {

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float f16_to_f32(f16_t h) {
  const uint32_t sign = uint32_t(h.bits & 0x8000u) << 16, e = (h.bits >> 10) & 0x1fu, m = h.bits & 0x3ffu;
  if (e == 0) {  // zero or subnormal: m * 2^-24
    const float v = float(m) * 5.9604644775390625e-8f;
    return bits_f32(sign | f32_bits(v));
  }
  if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
  return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

f16_t f32_to_f16(float f) {
  const uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return f16_t{uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu))};  // NaN, quiet
  if (a >= 0x477ff000u) return f16_t{uint16_t(sign | 0x7c00u)};  // >= 65520 rounds to inf (ties to even)
  if (a < 0x38800000u) {  // below 2^-14: subnormal result, round(|f| * 2^24) to nearest even (exact scaling)
    const float t = std::nearbyint(bits_f32(a) * 16777216.f);
    return f16_t{uint16_t(sign | uint32_t(t))};
  }
  const uint32_t m = a - 0x38000000u;  // exponent rebiased from 127 to 15
  return f16_t{uint16_t(sign | ((m + 0xfffu + ((m >> 13) & 1u)) >> 13))};
}

// NaN-propagating activations, as torch.relu / gelu (v < 0 is false for NaN).
static inline float act_lp(float v, Act act) {
  if (act == Act::Relu) return v < 0.f ? 0.f : v;
  if (act == Act::Gelu) return gelu_exact(v);
  return v;
}

// ---- packing ----

int64_t lp_slab_stride(const LpPack& p, int T, int64_t K) {
  return int64_t(T) * ((K + p.kpair - 1) / p.kpair * p.kpair) * p.nr;
}
int64_t lp_packed_size(const LpPack& p, int T, int64_t K, int64_t N) {
  return (N + p.nr - 1) / p.nr * lp_slab_stride(p, T, K);
}

// Packed index of W(t, k, n) within slab n / nr (see interface/ukernels_bf16.h).
static inline int64_t packed_index(const LpPack& p, int64_t t, int64_t K, int64_t k, int64_t n) {
  if (p.kpair == 2) {
    const int64_t Kp = (K + 1) / 2;
    return ((t * Kp + k / 2) * p.nr + n % p.nr) * 2 + k % 2;
  }
  return (t * K + k) * p.nr + n % p.nr;
}

template <class E>
static void pack_impl(const LpPack& p, int T, int64_t K, int64_t N, const float* w, int64_t ldw, E* packed) {
  const int64_t ss = lp_slab_stride(p, T, K), total = lp_packed_size(p, T, K, N);
  std::memset(static_cast<void*>(packed), 0, size_t(total) * sizeof(E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n)
        packed[(n / p.nr) * ss + packed_index(p, t, K, k, n)] = from_f32<E>(w[(t * K + k) * ldw + n]);
}
void lp_pack(const LpPack& p, int T, int64_t K, int64_t N, const float* w, int64_t ldw, bf16_t* packed) {
  pack_impl(p, T, K, N, w, ldw, packed);
}
void lp_pack(const LpPack& p, int T, int64_t K, int64_t N, const float* w, int64_t ldw, f16_t* packed) {
  pack_impl(p, T, K, N, w, ldw, packed);
}
// A bit copy: the same for both 16-bit types.
template <class E>
static void pack_block_impl(const LpPack& p, int64_t K, int64_t N, int64_t k0, int64_t k1, int64_t n0, int64_t n1,
                            const E* w, int64_t ldk, int64_t ldn, E* packed) {
  const int64_t ss = lp_slab_stride(p, 1, K), nr = p.nr, kp = p.kpair;
  const int64_t npad = n1 == N ? (N + nr - 1) / nr * nr : n1;  // columns written, padding included
  const int64_t kend = k1 == K ? (K + kp - 1) / kp * kp : k1;  // rows written, an odd K's pad included
  const E zero{0};
  for (int64_t k = k0; k < kend; ++k) {
    // row k of slab j: elements at packed_index(k, j*nr + c) = base + c * kp, c < nr
    const int64_t base = kp == 2 ? (k / 2) * nr * 2 + k % 2 : k * nr;
    const E* src = k < K ? w + (k - k0) * ldk : w;  // src[(n - n0) * ldn] = W(k, n), read for n < n1 only
    for (int64_t n = n0; n < npad;) {
      const int64_t j = n / nr, c_end = std::min(nr, npad - j * nr);
      E* dst = packed + j * ss + base;
      for (int64_t c = n - j * nr; c < c_end; ++c, ++n) dst[c * kp] = k < K && n < n1 ? src[(n - n0) * ldn] : zero;
    }
  }
}

void lp_pack_block(const LpPack& p, int64_t K, int64_t N, int64_t k0, int64_t k1, int64_t n0, int64_t n1,
                   const bf16_t* w, int64_t ldk, int64_t ldn, bf16_t* packed) {
  pack_block_impl(p, K, N, k0, k1, n0, n1, w, ldk, ldn, packed);
}
void lp_pack_block(const LpPack& p, int64_t K, int64_t N, int64_t k0, int64_t k1, int64_t n0, int64_t n1,
                   const f16_t* w, int64_t ldk, int64_t ldn, f16_t* packed) {
  pack_block_impl(p, K, N, k0, k1, n0, n1, w, ldk, ldn, packed);
}

// ---- kernels ----

// The scalar tables' layouts: bf16 shares the x86 tables' kpair32 (one packed copy for every x86 table);
// f16 has no x86 SIMD table, so k-major slabs of 16 (the aarch64 FP16 layout).
static constexpr const LpPack& kScalarBf16Pack = kPackBf16Kpair32;
static constexpr const LpPack& kScalarF16Pack = kPackF16K16;

template <class E>
static void conv_scalar(const LpPack& p, int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const E* A,
                        int64_t lda, const E* B, int64_t bss, E* C, int64_t ldc, const float* bias, Act act,
                        const E* R, int64_t ldr) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float acc = bias ? bias[n] : 0.f;
      const E* slab = B + (n / p.nr) * bss;
      for (int t = 0; t < T; ++t)
        for (int64_t k = 0; k < K; ++k)
          acc += to_f32(A[m * lda + off[t] + k]) * to_f32(slab[packed_index(p, t, K, k, n)]);
      float y = act_lp(acc, act);
      if (R) y += to_f32(R[m * ldr + n]);
      C[m * ldc + n] = from_f32<E>(y);
    }
}

template <class E>
static void dwconv_scalar(int64_t channels, int k, int s, const E* in, int64_t in_ps, int64_t in_rs, int64_t in_r0,
                          int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias, Act act, E* out,
                          int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
  const int p = k / 2;
  const int64_t out_w = (in_w - 1) / s + 1;
  for (int64_t oy = oy0; oy < oy1; ++oy)
    for (int64_t ox = 0; ox < out_w; ++ox)
      for (int64_t c = 0; c < channels; ++c) {
        float acc = bias ? bias[c] : 0.f;
        for (int i = 0; i < k; ++i) {
          const int64_t y = oy * s + i - p;
          if (y < 0 || y >= in_h) continue;
          for (int j = 0; j < k; ++j) {
            const int64_t x = ox * s + j - p;
            if (x < 0 || x >= in_w) continue;
            acc += w[(i * k + j) * ldw + c] * to_f32(in[(y - in_r0) * in_rs + x * in_ps + c]);
          }
        }
        out[(oy - oy0) * out_rs + ox * out_ps + c] = from_f32<E>(act_lp(acc, act));
      }
}

void bf16_conv_nhwc__scalar(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const bf16_t* A, int64_t lda,
                            const bf16_t* B, int64_t bss, bf16_t* C, int64_t ldc, const float* bias, Act act,
                            const bf16_t* R, int64_t ldr) {
  conv_scalar(kScalarBf16Pack, M, N, K, T, off, A, lda, B, bss, C, ldc, bias, act, R, ldr);
}
void f16_conv_nhwc__scalar(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const f16_t* A, int64_t lda,
                           const f16_t* B, int64_t bss, f16_t* C, int64_t ldc, const float* bias, Act act,
                           const f16_t* R, int64_t ldr) {
  conv_scalar(kScalarF16Pack, M, N, K, T, off, A, lda, B, bss, C, ldc, bias, act, R, ldr);
}
// ---- neon_fp16's arithmetic, portable (the neon_fp16_emu table) ----

// From the bits of the double, so that a sum held exactly in a double is rounded once, as a fused fp16
// multiply-add rounds.
f16_t f64_to_f16(double v) {
  uint64_t x;
  std::memcpy(&x, &v, 8);
  const uint16_t sign = uint16_t((x >> 48) & 0x8000u);
  const uint64_t a = x & 0x7fffffffffffffffull;
  if (a > 0x7ff0000000000000ull) return f16_t{uint16_t(sign | 0x7e00u)};  // NaN
  const int e = int(a >> 52) - 1023;                                     // unbiased exponent (normal doubles)
  if (e >= 16) return f16_t{uint16_t(sign | 0x7c00u)};                    // >= 65536 (and inf)
  if (e < -26) return f16_t{sign};                                        // below 2^-26: under half of 2^-24
  const uint64_t m = (a & 0xfffffffffffffull) | (1ull << 52);             // 53-bit significand
  // the result in units of its quantum, 2^(max(e, -14) - 10): the significand shifted right by `sh`
  const int sh = 42 + (e < -14 ? -14 - e : 0);
  const uint64_t q = m >> sh, rem = m & ((1ull << sh) - 1), half = 1ull << (sh - 1);
  const uint64_t r = q + (rem > half || (rem == half && (q & 1u)));
  // r counts quanta of 2^(max(e,-14)-10); for a normal result its top bit is the implicit one
  uint32_t bits;
  if (e < -14) bits = uint32_t(r);                                  // subnormal (r == 1024: the smallest normal)
  else bits = (uint32_t(e + 15) << 10) + uint32_t(r - 1024);        // r == 2048 carries into the exponent
  return f16_t{uint16_t(sign | (bits >= 0x7c00u ? 0x7c00u : bits))};
}

// f16_conv_nhwc_4x16__neonfp16arith's arithmetic (aarch64/neon_fp16.cpp), output by output: per tap, chunks of
// kChunk products summed in fp16 by fused multiply-adds (one rounding each: the partial sum plus the product,
// exact in fp32, is exact in a double unless the partial sum is below 2^-42 of the product, where it could only
// break a tie), each chunk's sum then added into an fp32 accumulator
// that starts at the bias; then the activation, the residual and one rounding to fp16. The order is the NEON
// kernel's, so the two agree bit for bit where the activation is none or relu (kernels/tests/test_bf16.cc).
void f16_conv_nhwc__neonfp16_emu(int64_t M, int64_t N, int64_t K, int T, const int64_t* off, const f16_t* A,
                                 int64_t lda, const f16_t* B, int64_t bss, f16_t* C, int64_t ldc, const float* bias,
                                 Act act, const f16_t* R, int64_t ldr) {
  constexpr int64_t kChunk = kNeonFp16AccChunk;  // ukernels_bf16.h
  const LpPack& p = kPackF16K16;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float acc = bias ? bias[n] : 0.f;
      const f16_t* slab = B + (n / p.nr) * bss;
      for (int t = 0; t < T; ++t)
        for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
          f16_t h{0};
          for (int64_t k = k0; k < std::min(K, k0 + kChunk); ++k) {
            const double prod = double(f16_to_f32(A[m * lda + off[t] + k])) *
                                double(f16_to_f32(slab[packed_index(p, t, K, k, n)]));
            h = f64_to_f16(double(f16_to_f32(h)) + prod);
          }
          acc += f16_to_f32(h);
        }
      float y = act_lp(acc, act);
      if (R) y += f16_to_f32(R[m * ldr + n]);
      C[m * ldc + n] = f32_to_f16(y);
    }
}

void bf16_dwconv_nhwc__scalar(int64_t channels, int k, int s, const bf16_t* in, int64_t in_ps, int64_t in_rs,
                              int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw,
                              const float* bias, Act act, bf16_t* out, int64_t out_ps, int64_t out_rs, int64_t oy0,
                              int64_t oy1) {
  dwconv_scalar(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, act, out, out_ps, out_rs, oy0,
                oy1);
}
void f16_dwconv_nhwc__scalar(int64_t channels, int k, int s, const f16_t* in, int64_t in_ps, int64_t in_rs,
                             int64_t in_r0, int64_t in_h, int64_t in_w, const float* w, int64_t ldw, const float* bias,
                             Act act, f16_t* out, int64_t out_ps, int64_t out_rs, int64_t oy0, int64_t oy1) {
  dwconv_scalar(channels, k, s, in, in_ps, in_rs, in_r0, in_h, in_w, w, ldw, bias, act, out, out_ps, out_rs, oy0,
                oy1);
}

}  // namespace cpu
}  // namespace mnv4
