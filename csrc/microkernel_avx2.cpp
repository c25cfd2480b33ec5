// AVX2+FMA micro-kernels (compiled with -mavx2 -mfma; reached only through the dispatch table
// after CPU detection). Register budget (16 ymm): 12 accumulators, 2 B vectors, 1 broadcast.
//   float : 6 x 16 tile = 6 rows x 2 ymm of 8 floats
//   double: 6 x 8 tile  = 6 rows x 2 ymm of 4 doubles
// Per k step: load one NR-wide row of packed B, broadcast 6 values of packed A, 12 FMAs.
#include <immintrin.h>

#include "microkernel.h"

namespace fastconv {
namespace {

#include "plane_kernels.inc"
#include "winograd_transforms.inc"

// The accumulators are named variables, not an array: GCC keeps an array of vectors in memory
// and stores it back on every iteration.
// Where row k of the B panel is: packed (b + k*NR) or through a pointer table.
template <typename T, int NR>
struct PackedRows {
  const T* b;
  const T* row(int64_t k) const { return b + k * NR; }
};
template <typename T>
struct PointerRows {
  const T* const* rows;
  int64_t offset;
  const T* row(int64_t k) const { return rows[k] + offset; }
};

// Where A(i, k) of the MR-row panel is: packed (a[k*MR + i]) or row i through a pointer.
template <typename T>
struct PackedA {
  const T* a;
  const T* at(int64_t k, int i) const { return a + k * 6 + i; }
};
template <typename T>
struct PointerA {
  const T* p[6];
  const T* at(int64_t k, int i) const { return p[i] + k; }
};

template <typename ARows, typename Rows>
void gemm_f32_6x16(int64_t kc, ARows a, Rows b_rows, float* c, int64_t ldc,
                   bool accumulate) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < kc; ++k) {
    const float* b = b_rows.row(k);
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = _mm256_loadu_ps(b + 8);
    __m256 ai = _mm256_broadcast_ss(a.at(k, 0));
    c00 = _mm256_fmadd_ps(ai, b0, c00);
    c01 = _mm256_fmadd_ps(ai, b1, c01);
    ai = _mm256_broadcast_ss(a.at(k, 1));
    c10 = _mm256_fmadd_ps(ai, b0, c10);
    c11 = _mm256_fmadd_ps(ai, b1, c11);
    ai = _mm256_broadcast_ss(a.at(k, 2));
    c20 = _mm256_fmadd_ps(ai, b0, c20);
    c21 = _mm256_fmadd_ps(ai, b1, c21);
    ai = _mm256_broadcast_ss(a.at(k, 3));
    c30 = _mm256_fmadd_ps(ai, b0, c30);
    c31 = _mm256_fmadd_ps(ai, b1, c31);
    ai = _mm256_broadcast_ss(a.at(k, 4));
    c40 = _mm256_fmadd_ps(ai, b0, c40);
    c41 = _mm256_fmadd_ps(ai, b1, c41);
    ai = _mm256_broadcast_ss(a.at(k, 5));
    c50 = _mm256_fmadd_ps(ai, b0, c50);
    c51 = _mm256_fmadd_ps(ai, b1, c51);
  }
  const __m256 rows[6][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                             {c30, c31}, {c40, c41}, {c50, c51}};
  for (int i = 0; i < 6; ++i) {
    float* ci = c + i * ldc;
    __m256 lo = rows[i][0], hi = rows[i][1];
    if (accumulate) {
      lo = _mm256_add_ps(_mm256_loadu_ps(ci), lo);
      hi = _mm256_add_ps(_mm256_loadu_ps(ci + 8), hi);
    }
    _mm256_storeu_ps(ci, lo);
    _mm256_storeu_ps(ci + 8, hi);
  }
}

template <typename ARows, typename Rows>
void gemm_f64_6x8(int64_t kc, ARows a, Rows b_rows, double* c, int64_t ldc,
                  bool accumulate) {
  __m256d c00 = _mm256_setzero_pd(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256d c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < kc; ++k) {
    const double* b = b_rows.row(k);
    const __m256d b0 = _mm256_loadu_pd(b);
    const __m256d b1 = _mm256_loadu_pd(b + 4);
    __m256d ai = _mm256_broadcast_sd(a.at(k, 0));
    c00 = _mm256_fmadd_pd(ai, b0, c00);
    c01 = _mm256_fmadd_pd(ai, b1, c01);
    ai = _mm256_broadcast_sd(a.at(k, 1));
    c10 = _mm256_fmadd_pd(ai, b0, c10);
    c11 = _mm256_fmadd_pd(ai, b1, c11);
    ai = _mm256_broadcast_sd(a.at(k, 2));
    c20 = _mm256_fmadd_pd(ai, b0, c20);
    c21 = _mm256_fmadd_pd(ai, b1, c21);
    ai = _mm256_broadcast_sd(a.at(k, 3));
    c30 = _mm256_fmadd_pd(ai, b0, c30);
    c31 = _mm256_fmadd_pd(ai, b1, c31);
    ai = _mm256_broadcast_sd(a.at(k, 4));
    c40 = _mm256_fmadd_pd(ai, b0, c40);
    c41 = _mm256_fmadd_pd(ai, b1, c41);
    ai = _mm256_broadcast_sd(a.at(k, 5));
    c50 = _mm256_fmadd_pd(ai, b0, c50);
    c51 = _mm256_fmadd_pd(ai, b1, c51);
  }
  const __m256d rows[6][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                              {c30, c31}, {c40, c41}, {c50, c51}};
  for (int i = 0; i < 6; ++i) {
    double* ci = c + i * ldc;
    __m256d lo = rows[i][0], hi = rows[i][1];
    if (accumulate) {
      lo = _mm256_add_pd(_mm256_loadu_pd(ci), lo);
      hi = _mm256_add_pd(_mm256_loadu_pd(ci + 4), hi);
    }
    _mm256_storeu_pd(ci, lo);
    _mm256_storeu_pd(ci + 4, hi);
  }
}

void gemm_ukernel_f32_6x16_avx2(int64_t kc, const float* a, const float* b, float* c,
                                int64_t ldc, bool accumulate) {
  gemm_f32_6x16(kc, PackedA<float>{a}, PackedRows<float, 16>{b}, c, ldc, accumulate);
}
void gemm_ukernel_f32_6x16_indirect_avx2(int64_t kc, const float* a, const float* const* b_rows,
                                         int64_t b_offset, float* c, int64_t ldc,
                                         bool accumulate) {
  gemm_f32_6x16(kc, PackedA<float>{a}, PointerRows<float>{b_rows, b_offset}, c, ldc, accumulate);
}
void gemm_ukernel_f64_6x8_avx2(int64_t kc, const double* a, const double* b, double* c,
                               int64_t ldc, bool accumulate) {
  gemm_f64_6x8(kc, PackedA<double>{a}, PackedRows<double, 8>{b}, c, ldc, accumulate);
}
void gemm_ukernel_f64_6x8_indirect_avx2(int64_t kc, const double* a,
                                        const double* const* b_rows, int64_t b_offset,
                                        double* c, int64_t ldc, bool accumulate) {
  gemm_f64_6x8(kc, PackedA<double>{a}, PointerRows<double>{b_rows, b_offset}, c, ldc, accumulate);
}

void gemm_ukernel_f32_6x16_indirect_a_avx2(int64_t kc, const float* const* a_rows,
                                           const float* b, float* c, int64_t ldc,
                                           bool accumulate) {
  const PointerA<float> a = {{a_rows[0], a_rows[1], a_rows[2], a_rows[3], a_rows[4], a_rows[5]}};
  gemm_f32_6x16(kc, a, PackedRows<float, 16>{b}, c, ldc, accumulate);
}
void gemm_ukernel_f64_6x8_indirect_a_avx2(int64_t kc, const double* const* a_rows,
                                          const double* b, double* c, int64_t ldc,
                                          bool accumulate) {
  const PointerA<double> a = {{a_rows[0], a_rows[1], a_rows[2], a_rows[3], a_rows[4], a_rows[5]}};
  gemm_f64_6x8(kc, a, PackedRows<double, 8>{b}, c, ldc, accumulate);
}

const IsaKernels kAvx2 = {
    "avx2",
    {6, 16, &gemm_ukernel_f32_6x16_avx2, &gemm_ukernel_f32_6x16_indirect_avx2,
     &gemm_ukernel_f32_6x16_indirect_a_avx2},
    {6, 8, &gemm_ukernel_f64_6x8_avx2, &gemm_ukernel_f64_6x8_indirect_avx2,
     &gemm_ukernel_f64_6x8_indirect_a_avx2},
    {&plane_forward<float>, &plane_input_grad<float>, &plane_weight_grad<float>,
     &flat_correlate<float>, &flat_dots<float>},
    {&plane_forward<double>, &plane_input_grad<double>, &plane_weight_grad<double>,
     &flat_correlate<double>, &flat_dots<double>},
    {&winograd_input_panel<float, 16>, &winograd_output_panel<float, 16>,
     &winograd_input_tile_cl<float>, &winograd_grad_tile_cl<float>},
    {&winograd_input_panel<double, 8>, &winograd_output_panel<double, 8>,
     &winograd_input_tile_cl<double>, &winograd_grad_tile_cl<double>},
    &kPoolRowKernelsAvx2,
};

}  // namespace

const IsaKernels& isa_kernels_avx2() { return kAvx2; }

}  // namespace fastconv
