/* FMA peak probe for bench/run.py: each thread runs 12 independent chains of 8-wide float
 * (or 4-wide double) fused multiply-adds, enough to cover the FMA latency on every port, and
 * the probe prints the GFLOP/s reached with 1 and with N threads (a multiply-add counts 2).
 * float64 runs on the same FMA units at half the lanes: its peak is half of this.
 *   cc -O3 -mavx2 -mfma -fopenmp fma_peak.c -o fma_peak && ./fma_peak N  */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define CHAINS 12
#define STEPS 20000000L

static double run_f32(int threads) {
  double t0 = omp_get_wtime(), sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
    __m256 acc[CHAINS];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_set1_ps((float)i);
    for (long s = 0; s < STEPS; ++s) {
#pragma GCC unroll 12 /* keeps the chains in registers */
      for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    float out[8];
    for (int i = 1; i < CHAINS; ++i) acc[0] = _mm256_add_ps(acc[0], acc[i]);
    _mm256_storeu_ps(out, acc[0]);
    sink += out[0];
  }
  double seconds = omp_get_wtime() - t0;
  if (sink == 12345.0) printf("%f\n", sink); /* keep the work */
  return 2.0 * 8 * CHAINS * (double)STEPS * threads / seconds / 1e9;
}

int main(int argc, char** argv) {
  int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
  double best1 = 0, bestn = 0;
  for (int rep = 0; rep < 3; ++rep) { /* best of 3: the machine is shared */
    double one = run_f32(1), many = run_f32(threads);
    if (one > best1) best1 = one;
    if (many > bestn) bestn = many;
  }
  printf("{\"threads\": %d, \"f32_gflops_1\": %.1f, \"f32_gflops_n\": %.1f}\n", threads, best1,
         bestn);
  return 0;
}
