/* The machine's bf16 dot-product peaks, per core, like benches/fma_peak.c: register-only loops, no memory
 * traffic, so the rate is the execution units' throughput at the clock the core holds under load.
 *   vdpbf16ps: 12 independent accumulator chains of AVX512-BF16 vdpbf16ps zmm (16 lanes x 2 products x 2 flops
 *     = 64 flops each).
 *   tdpbf16ps: AMX-BF16, four 16x16 fp32 C tiles updated round-robin from two A and two B tiles (each
 *     tdpbf16ps: 16 x 16 x 32 multiply-adds = 16384 flops); needs arch_prctl(ARCH_REQ_XCOMP_PERM,
 *     XFEATURE_XTILEDATA) first.
 *   fma32: the same 12 chains as vfmadd zmm fp32 (32 flops each): benches/fma_peak.c's loop, here so that a
 *     harness interleaving all three in one process (benches/bf16_gemm_cpu.cpp) compares them under one load.
 * Each is run only where __builtin_cpu_supports says the CPU has it; otherwise a line says why it was skipped.
 * Built by benches/bf16_cpu.py with gcc -O2 (the ISA code is behind target attributes); with
 * -DBF16_PEAK_NO_MAIN it is the peak loops of benches/bf16_gemm_cpu.cpp (bf16_peak_* below).
 *     bf16_peak THREADS  ->  lines "vdpbf16ps <GFLOP/s> <seconds>" / "tdpbf16ps <GFLOP/s> <seconds>" (best of 3)
 *                           or "<name> skipped: <reason>"                                                     */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { CHAINS = 12 };
static long DP_ITERS = 40000000;
static long AMX_ITERS = 4000000;

__attribute__((target("avx512f,avx512bf16"))) static void* run_dp(void* out) {
  __m512 acc[CHAINS];
  const __m512 a = _mm512_set1_ps(1e-3f), b = _mm512_set1_ps(1e-3f);
  for (int j = 0; j < CHAINS; ++j) acc[j] = _mm512_set1_ps((float)j);
  const long iters = DP_ITERS;
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int j = 0; j < CHAINS; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)a, (__m512bh)b);
  }
  float s = 0;
  for (int j = 0; j < CHAINS; ++j) s += _mm512_reduce_add_ps(acc[j]);
  *(float*)out = s; /* keeps the chains alive */
  return NULL;
}

__attribute__((target("avx512f,fma"))) static void* run_fma32(void* out) {
  __m512 acc[CHAINS];
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int j = 0; j < CHAINS; ++j) acc[j] = _mm512_set1_ps((float)j);
  const long iters = DP_ITERS;
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int j = 0; j < CHAINS; ++j) acc[j] = _mm512_fmadd_ps(acc[j], m, c);
  }
  float s = 0;
  for (int j = 0; j < CHAINS; ++j) s += _mm512_reduce_add_ps(acc[j]);
  *(float*)out = s;
  return NULL;
}

struct __attribute__((aligned(64))) tilecfg {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

__attribute__((target("amx-tile,amx-bf16"))) static void* run_amx(void* out) {
  struct tilecfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) cfg.rows[t] = 16, cfg.colsb[t] = 64;
  static __thread uint16_t buf[16 * 32] __attribute__((aligned(64)));
  for (int i = 0; i < 16 * 32; ++i) buf[i] = 0x3a83; /* ~1e-3 in bf16 */
  float c[16 * 16];
  _tile_loadconfig(&cfg);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, buf, 64);
  _tile_loadd(5, buf, 64);
  _tile_loadd(6, buf, 64);
  _tile_loadd(7, buf, 64);
  const long iters = AMX_ITERS;
  for (long k = 0; k < iters; ++k) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, 64);
  _tile_release();
  *(float*)out = c[0];
  return NULL;
}

__attribute__((unused)) static double timed(void* (*fn)(void*), int threads) {
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    pthread_t* t = malloc(sizeof(pthread_t) * threads);
    float* sink = malloc(sizeof(float) * threads);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < threads; ++i) pthread_create(&t[i], NULL, fn, &sink[i]);
    for (int i = 0; i < threads; ++i) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    if (s < best) best = s;
    free(t);
    free(sink);
  }
  return best;
}

/* One thread, `iters` iterations of each loop: GFLOP/s, or 0 where the CPU lacks the instructions (the AMX
 * one also when Linux refuses the tile state). */
float bf16_peak_sink; /* external: the loops' results must be kept */
static double once(void* (*fn)(void*)) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  fn(&bf16_peak_sink);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
}
double bf16_peak_fma32(long iters) {
  if (!__builtin_cpu_supports("avx512f")) return 0;
  DP_ITERS = iters;
  return 32.0 * CHAINS * iters / once(run_fma32) / 1e9;
}
double bf16_peak_dp(long iters) {
  if (!__builtin_cpu_supports("avx512bf16")) return 0;
  DP_ITERS = iters;
  return 64.0 * CHAINS * iters / once(run_dp) / 1e9;
}
double bf16_peak_amx(long iters) {
  if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16") ||
      syscall(SYS_arch_prctl, 0x1023, 18) != 0)
    return 0;
  AMX_ITERS = iters;
  return 4.0 * 16384.0 * iters / once(run_amx) / 1e9;
}

#ifndef BF16_PEAK_NO_MAIN
int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 1;
  if (threads < 1 || threads > 1024) return 2;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    const double s = timed(run_fma32, threads);
    printf("fma32 %.2f %.4f\n", 32.0 * CHAINS * DP_ITERS * threads / s / 1e9, s);
  }
  if (__builtin_cpu_supports("avx512bf16")) {
    const double s = timed(run_dp, threads);
    printf("vdpbf16ps %.2f %.4f\n", 64.0 * CHAINS * DP_ITERS * threads / s / 1e9, s);
  } else {
    printf("vdpbf16ps skipped: the CPU has no AVX512-BF16\n");
  }
  if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16")) {
    printf("tdpbf16ps skipped: the CPU has no AMX-TILE / AMX-BF16\n");
  } else if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) != 0) {
    printf("tdpbf16ps skipped: Linux refused the AMX tile data state\n");
  } else {
    const double s = timed(run_amx, threads);
    printf("tdpbf16ps %.2f %.4f\n", 4.0 * 16384.0 * AMX_ITERS * threads / s / 1e9, s);
  }
  return 0;
}
#endif
