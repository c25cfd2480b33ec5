// AVX2+FMA micro-kernels (compiled with -mavx2 -mfma; reached only through the dispatch table
// after CPU detection). Register budget (16 ymm): 12 accumulators, 2 B vectors, 1 broadcast.
//   float : 6 x 16 tile = 6 rows x 2 ymm of 8 floats
//   double: 6 x 8 tile  = 6 rows x 2 ymm of 4 doubles
// Per k step: load one NR-wide row of packed B, broadcast 6 values of packed A, 12 FMAs.
#include <immintrin.h>

#include "microkernel.h"

namespace fastconv {
namespace {

void gemm_ukernel_f32_6x16_avx2(int64_t kc, const float* a, const float* b, float* c,
                                int64_t ldc, bool accumulate) {
  __m256 acc[6][2];
  for (int i = 0; i < 6; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = _mm256_loadu_ps(b + 8);
    for (int i = 0; i < 6; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += 6;
    b += 16;
  }
  for (int i = 0; i < 6; ++i) {
    float* ci = c + i * ldc;
    if (accumulate) {
      acc[i][0] = _mm256_add_ps(_mm256_loadu_ps(ci), acc[i][0]);
      acc[i][1] = _mm256_add_ps(_mm256_loadu_ps(ci + 8), acc[i][1]);
    }
    _mm256_storeu_ps(ci, acc[i][0]);
    _mm256_storeu_ps(ci + 8, acc[i][1]);
  }
}

void gemm_ukernel_f64_6x8_avx2(int64_t kc, const double* a, const double* b, double* c,
                               int64_t ldc, bool accumulate) {
  __m256d acc[6][2];
  for (int i = 0; i < 6; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_pd();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256d b0 = _mm256_loadu_pd(b);
    const __m256d b1 = _mm256_loadu_pd(b + 4);
    for (int i = 0; i < 6; ++i) {
      const __m256d ai = _mm256_broadcast_sd(a + i);
      acc[i][0] = _mm256_fmadd_pd(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_pd(ai, b1, acc[i][1]);
    }
    a += 6;
    b += 8;
  }
  for (int i = 0; i < 6; ++i) {
    double* ci = c + i * ldc;
    if (accumulate) {
      acc[i][0] = _mm256_add_pd(_mm256_loadu_pd(ci), acc[i][0]);
      acc[i][1] = _mm256_add_pd(_mm256_loadu_pd(ci + 4), acc[i][1]);
    }
    _mm256_storeu_pd(ci, acc[i][0]);
    _mm256_storeu_pd(ci + 4, acc[i][1]);
  }
}

const IsaKernels kAvx2 = {
    "avx2",
    {6, 16, &gemm_ukernel_f32_6x16_avx2},
    {6, 8, &gemm_ukernel_f64_6x8_avx2},
};

}  // namespace

const IsaKernels& isa_kernels_avx2() { return kAvx2; }

}  // namespace fastconv
