/* The machine's fp32 multiply-add peak: each thread runs 12 independent chains of vector FMAs on registers
 * (no memory traffic), so the rate is the FMA units' throughput at the clock the cores hold under load.
 * Portable (GCC vector extensions of the machine's widest vector: 64 bytes with AVX-512, 32 with AVX, else
 * 16 (SSE, NEON); wider types than the registers would split and spill the 12 chains: 64-byte vectors on an
 * AVX2 core measured 11 of 115 GFLOP/s); built with -O2 -march=native by mnv4_kernels.bench.fma_peak_gflops.
 *     fma_peak THREADS  ->  prints "<GFLOP/s> <seconds>" (best of 3 runs)                                  */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
typedef float vec __attribute__((vector_size(VBYTES)));
enum { CHAINS = 12, LANES = VBYTES / 4 };
static const long ITERS = 60000000;

static void* run(void* out) {
  vec a[CHAINS], m, c;
  for (int i = 0; i < LANES; ++i) m[i] = 0.999999f, c[i] = 1e-7f;
  for (int j = 0; j < CHAINS; ++j)
    for (int i = 0; i < LANES; ++i) a[j][i] = (float)(i + j);
  for (long k = 0; k < ITERS; ++k)
#pragma GCC unroll 12
    for (int j = 0; j < CHAINS; ++j) a[j] = a[j] * m + c;
  float s = 0;
  for (int j = 0; j < CHAINS; ++j)
    for (int i = 0; i < LANES; ++i) s += a[j][i];
  *(float*)out = s; /* keeps the chains alive */
  return NULL;
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 1;
  if (threads < 1 || threads > 1024) return 2;
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    pthread_t* t = malloc(sizeof(pthread_t) * threads);
    float* sink = malloc(sizeof(float) * threads);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < threads; ++i) pthread_create(&t[i], NULL, run, &sink[i]);
    for (int i = 0; i < threads; ++i) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    if (s < best) best = s;
    free(t);
    free(sink);
  }
  printf("%.2f %.4f\n", 2.0 * LANES * CHAINS * ITERS * threads / best / 1e9, best);
  return 0;
}
