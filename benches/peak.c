/* The machine's arithmetic peaks: register-only loops on every thread (no memory traffic), so each rate is the
 * execution units' throughput at the clock the cores hold under load. No implementation computes a model faster
 * than its FLOPs at the peak of the instructions it uses, so these are hard bounds (benches/README.md, Bounds).
 *   fma32:     12 independent accumulator chains of fp32 vector FMAs in the widest vectors the CPU has (on x86
 *              picked at run time: zmm with AVX-512F, ymm with AVX2+FMA, else xmm multiply + add; elsewhere the
 *              compiler's vectors for the target, 16 bytes on NEON). 12 chains hide the FMA latency; vectors
 *              wider than the registers would split and spill them (64-byte vectors on an AVX2 core measured 11
 *              of 115 GFLOP/s), so the width follows the CPU.
 *   vdpbf16ps: the same 12 chains as AVX512-BF16 vdpbf16ps zmm (16 lanes x 2 products x 2 flops = 64 flops).
 *   vfmadd231ph: the same 12 chains as AVX512-FP16 vfmadd231ph zmm (32 fp16 lanes x 2 flops = 64 flops).
 *   tdpbf16ps: AMX-BF16, four 16x16 fp32 C tiles updated round-robin from two A and two B tiles (each
 *              tdpbf16ps: 16 x 16 x 32 multiply-adds = 16384 flops); needs arch_prctl(ARCH_REQ_XCOMP_PERM,
 *              XFEATURE_XTILEDATA) first, once per process.
 * Each runs only where __builtin_cpu_supports says the CPU has it; otherwise a line says why it was skipped. The
 * ISA code sits behind target attributes, so any -march builds it (mnv4_kernels.bench.peak_gflops uses
 * cc -O2 -march=native, benches/bf16_cpu.py gcc -O2).
 *     peak THREADS  ->  lines "<name> <GFLOP/s> <seconds>" (best of 3 runs; THREADS threads, one loop each)
 *                       or "<name> skipped: <reason>", for name in fma32, vdpbf16ps, tdpbf16ps, vfmadd231ph
 * With -DPEAK_NO_MAIN it is the one-thread peak loops that benches/bf16_kernels_cpu.cpp times between its kernels
 * (bf16_peak_* below: GFLOP/s of one run, 0 where the CPU lacks the instructions).                          */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#define PEAK_X86 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#define PEAK_X86 0
#endif

enum { CHAINS = 12 };
static long FMA_ITERS = 60000000;
static long DP_ITERS = 40000000;
static long AMX_ITERS = 4000000;
static long PH_ITERS = 40000000;

/* The fp32 chains on GCC vectors of VB bytes (FLOPS_PER_ITER = 2 * lanes * CHAINS). */
#define FMA_LOOP(VB)                                                                   \
  typedef float vec __attribute__((vector_size(VB)));                                  \
  enum { LANES = (VB) / 4 };                                                           \
  vec a[CHAINS], m, c;                                                                 \
  for (int i = 0; i < LANES; ++i) m[i] = 0.999999f, c[i] = 1e-7f;                      \
  for (int j = 0; j < CHAINS; ++j)                                                     \
    for (int i = 0; i < LANES; ++i) a[j][i] = (float)(i + j);                          \
  const long iters = FMA_ITERS;                                                        \
  for (long k = 0; k < iters; ++k) {                                                   \
    _Pragma("GCC unroll 12") for (int j = 0; j < CHAINS; ++j) a[j] = a[j] * m + c;     \
  }                                                                                    \
  float s = 0;                                                                         \
  for (int j = 0; j < CHAINS; ++j)                                                     \
    for (int i = 0; i < LANES; ++i) s += a[j][i];                                      \
  *(float*)out = s; /* keeps the chains alive */                                       \
  return NULL;

#if PEAK_X86
/* `a * m + c` is one expression, contracted to one vfmadd (GCC's and Clang's default) under the target attribute. */
__attribute__((target("avx512f"))) static void* fma32_zmm(void* out) { FMA_LOOP(64) }
__attribute__((target("avx2,fma"))) static void* fma32_ymm(void* out) { FMA_LOOP(32) }
static void* fma32_xmm(void* out) { FMA_LOOP(16) }

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

__attribute__((target("avx512f,avx512fp16"))) static void* run_ph(void* out) {
  __m512h acc[CHAINS];
  const __m512h a = _mm512_set1_ph((_Float16)0.999f), b = _mm512_set1_ph((_Float16)1e-3f);
  for (int j = 0; j < CHAINS; ++j) acc[j] = _mm512_set1_ph((_Float16)j);
  const long iters = PH_ITERS;
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int j = 0; j < CHAINS; ++j) acc[j] = _mm512_fmadd_ph(acc[j], a, b);
  }
  float s = 0;
  for (int j = 0; j < CHAINS; ++j) s += (float)_mm512_reduce_add_ph(acc[j]);
  *(float*)out = s; /* keeps the chains alive */
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
#else
#define NATIVE_VBYTES 16 /* NEON's width (and the smallest vector any SIMD target has) */
static void* fma32_native(void* out) { FMA_LOOP(NATIVE_VBYTES) }
#endif

/* One peak: its loop, flops per iteration per thread, iterations, or why it cannot run here. */
struct peak {
  const char* name;
  void* (*fn)(void*);
  double flops_per_iter;
  long* iters;
  const char* skipped;
};

static struct peak fma32_peak(void) {
#if PEAK_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return (struct peak){"fma32", fma32_zmm, 2.0 * 16 * CHAINS, &FMA_ITERS, 0};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return (struct peak){"fma32", fma32_ymm, 2.0 * 8 * CHAINS, &FMA_ITERS, 0};
  return (struct peak){"fma32", fma32_xmm, 2.0 * 4 * CHAINS, &FMA_ITERS, 0};
#else
  return (struct peak){"fma32", fma32_native, 2.0 * (NATIVE_VBYTES / 4) * CHAINS, &FMA_ITERS, 0};
#endif
}

static struct peak dp_peak(void) {
#if PEAK_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512bf16")) return (struct peak){"vdpbf16ps", run_dp, 64.0 * CHAINS, &DP_ITERS, 0};
  return (struct peak){"vdpbf16ps", 0, 0, 0, "the CPU has no AVX512-BF16"};
#else
  return (struct peak){"vdpbf16ps", 0, 0, 0, "not an x86 CPU"};
#endif
}

static struct peak ph_peak(void) {
#if PEAK_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512fp16")) return (struct peak){"vfmadd231ph", run_ph, 64.0 * CHAINS, &PH_ITERS, 0};
  return (struct peak){"vfmadd231ph", 0, 0, 0, "the CPU has no AVX512-FP16"};
#else
  return (struct peak){"vfmadd231ph", 0, 0, 0, "not an x86 CPU"};
#endif
}

static struct peak amx_peak(void) {
#if PEAK_X86
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16"))
    return (struct peak){"tdpbf16ps", 0, 0, 0, "the CPU has no AMX-TILE / AMX-BF16"};
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) != 0)
    return (struct peak){"tdpbf16ps", 0, 0, 0, "Linux refused the AMX tile data state (arch_prctl)"};
  return (struct peak){"tdpbf16ps", run_amx, 4.0 * 16384.0, &AMX_ITERS, 0};
#else
  return (struct peak){"tdpbf16ps", 0, 0, 0, "not an x86 CPU"};
#endif
}

static double seconds_since(const struct timespec* t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (t1.tv_sec - t0->tv_sec) + 1e-9 * (t1.tv_nsec - t0->tv_nsec);
}

/* One-thread GFLOP/s of one run of `iters` iterations, or 0 where the CPU lacks the instructions. */
float bf16_peak_sink; /* external: the loops' results must be kept */
static double once(struct peak p, long iters) {
  if (!p.fn) return 0;
  *p.iters = iters;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  p.fn(&bf16_peak_sink);
  return p.flops_per_iter * iters / seconds_since(&t0) / 1e9;
}
double bf16_peak_fma32(long iters) { return once(fma32_peak(), iters); }
double bf16_peak_dp(long iters) { return once(dp_peak(), iters); }
double bf16_peak_amx(long iters) { return once(amx_peak(), iters); }
double bf16_peak_ph(long iters) { return once(ph_peak(), iters); }

#ifndef PEAK_NO_MAIN
/* Best of 3 runs of `threads` threads each running the loop once: prints the peak's line. */
static void report(struct peak p, int threads) {
  if (!p.fn) {
    printf("%s skipped: %s\n", p.name, p.skipped);
    return;
  }
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    pthread_t* t = malloc(sizeof(pthread_t) * threads);
    float* sink = malloc(sizeof(float) * threads);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < threads; ++i) pthread_create(&t[i], NULL, p.fn, &sink[i]);
    for (int i = 0; i < threads; ++i) pthread_join(t[i], NULL);
    const double s = seconds_since(&t0);
    if (s < best) best = s;
    free(t);
    free(sink);
  }
  printf("%s %.2f %.4f\n", p.name, p.flops_per_iter * *p.iters * threads / best / 1e9, best);
  fflush(stdout);
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 1;
  if (threads < 1 || threads > 1024) {
    fprintf(stderr, "usage: peak THREADS (1..1024)\n");
    return 2;
  }
  report(fma32_peak(), threads);
  report(dp_peak(), threads);
  report(ph_peak(), threads);
  report(amx_peak(), threads); /* after the arch_prctl request in amx_peak(), which covers every thread */
  return 0;
}
#endif
