/* FMA peak probe for bench/run.py: each thread runs 12 independent chains of float fused
 * multiply-adds, enough to cover the FMA latency on every port, and the probe prints the
 * GFLOP/s reached with 1 and with N threads (a multiply-add counts 2), with 8-wide AVX2
 * vectors and, where the CPU has AVX-512F, with 16-wide ones (the machine's peak is the
 * faster: fastconv dispatches to the same ISA). float64 runs on the same FMA units at half
 * the lanes: its peak is half of this.
 *   cc -O3 -mavx2 -mfma -fopenmp fma_peak.c -o fma_peak && ./fma_peak N  */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define CHAINS 12
#define STEPS 20000000L

/* One probe per vector width; VEC, SET1, FMADD, ADD, STORE and LANES name its intrinsics. */
#define PROBE(NAME, TARGET, VEC, SET1, FMADD, ADD, STORE, LANES)                              \
  __attribute__((target(TARGET))) static double NAME(int threads) {                            \
    double t0 = omp_get_wtime(), sink = 0;                                                     \
    _Pragma("omp parallel num_threads(threads) reduction(+ : sink)") {                          \
      VEC acc[CHAINS];                                                                         \
      const VEC a = SET1(0.999999f), b = SET1(1e-7f);                                          \
      for (int i = 0; i < CHAINS; ++i) acc[i] = SET1((float)i);                                \
      for (long s = 0; s < STEPS; ++s) {                                                       \
        _Pragma("GCC unroll 12") /* keeps the chains in registers */                           \
        for (int i = 0; i < CHAINS; ++i) acc[i] = FMADD(acc[i], a, b);                         \
      }                                                                                        \
      float out[LANES];                                                                        \
      for (int i = 1; i < CHAINS; ++i) acc[0] = ADD(acc[0], acc[i]);                           \
      STORE(out, acc[0]);                                                                      \
      sink += out[0];                                                                          \
    }                                                                                          \
    double seconds = omp_get_wtime() - t0;                                                     \
    if (sink == 12345.0) printf("%f\n", sink); /* keep the work */                            \
    return 2.0 * LANES * CHAINS * (double)STEPS * threads / seconds / 1e9;                     \
  }

PROBE(run_avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps,
      _mm256_storeu_ps, 8)
PROBE(run_avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps,
      _mm512_storeu_ps, 16)

int main(int argc, char** argv) {
  int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
  __builtin_cpu_init();
  int avx512 = __builtin_cpu_supports("avx512f");
  double (*run_f32)(int) = avx512 ? run_avx512 : run_avx2;
  double best1 = 0, bestn = 0;
  for (int rep = 0; rep < 3; ++rep) { /* best of 3: the machine is shared */
    double one = run_f32(1), many = run_f32(threads);
    if (one > best1) best1 = one;
    if (many > bestn) bestn = many;
  }
  printf("{\"threads\": %d, \"isa\": \"%s\", \"f32_gflops_1\": %.1f, \"f32_gflops_n\": %.1f}\n",
         threads, avx512 ? "avx512" : "avx2", best1, bestn);
  return 0;
}
