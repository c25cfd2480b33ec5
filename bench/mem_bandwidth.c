/* Memory bandwidth probe for bench/run.py: the rate at which 1 and N threads read a 256 MiB
 * buffer (a sum) and copy one 128 MiB buffer into another (b = a + 1, so that no memcpy with
 * non-temporal stores stands in for it; read and written bytes both count, as in STREAM),
 * best of 5 each, in GB/s. The buffers are far larger than the caches: these are the rates of
 * DRAM, which bound a memory-bound kernel (depthwise, pooling) whose inputs are not cached.
 *   cc -O3 -mavx2 -fopenmp mem_bandwidth.c -o mem_bandwidth && ./mem_bandwidth N  */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define FLOATS (64L << 20) /* 256 MiB */

static double read_rate(const float* a, int threads) {
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    double t0 = omp_get_wtime();
    float sum = 0;
#pragma omp parallel for simd num_threads(threads) reduction(+ : sum) schedule(static)
    for (long i = 0; i < FLOATS; ++i) sum += a[i];
    double seconds = omp_get_wtime() - t0;
    if (sum == 12345.0f) printf("%f\n", sum); /* keep the work */
    double rate = FLOATS * sizeof(float) / seconds / 1e9;
    if (rate > best) best = rate;
  }
  return best;
}

static double copy_rate(const float* a, float* b, int threads) {
  double best = 0;
  const long n = FLOATS / 2;
  for (int rep = 0; rep < 5; ++rep) {
    double t0 = omp_get_wtime();
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (long i = 0; i < n; ++i) b[i] = a[i] + 1.0f;
    double seconds = omp_get_wtime() - t0;
    double rate = 2.0 * n * sizeof(float) / seconds / 1e9;
    if (rate > best) best = rate;
  }
  return best;
}

int main(int argc, char** argv) {
  int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
  float* a = malloc(FLOATS * sizeof(float));
  float* b = malloc(FLOATS / 2 * sizeof(float));
  if (!a || !b) return 1;
#pragma omp parallel for num_threads(threads) schedule(static) /* first touch, as the runs */
  for (long i = 0; i < FLOATS; ++i) a[i] = 1.0f;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (long i = 0; i < FLOATS / 2; ++i) b[i] = 0.0f;
  printf("{\"threads\": %d, \"read_gbs_1\": %.1f, \"read_gbs_n\": %.1f, \"copy_gbs_1\": %.1f, "
         "\"copy_gbs_n\": %.1f}\n",
         threads, read_rate(a, 1), read_rate(a, threads), copy_rate(a + FLOATS / 2, b, 1),
         copy_rate(a + FLOATS / 2, b, threads));
  free(a);
  free(b);
  return 0;
}
