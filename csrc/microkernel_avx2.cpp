// AVX2+FMA micro-kernels (compiled with -mavx2 -mfma; reached only through the dispatch table
// after CPU detection). Register budget (16 ymm): 12 accumulators, 2 B vectors, 1 broadcast.
//   float : 6 x 16 tile = 6 rows x 2 ymm of 8 floats
//   double: 6 x 8 tile  = 6 rows x 2 ymm of 4 doubles
// Per k step: load one NR-wide row of packed B, broadcast 6 values of packed A, 12 FMAs.
#include <immintrin.h>

#include <algorithm>

#include <type_traits>

#include "microkernel.h"

namespace fastconv {
namespace {

#include "plane_kernels.inc"
#include "winograd_transforms.inc"

#include "microkernel_operands.inc"

// The accumulators are named variables, not an array: GCC keeps an array of vectors in memory
// and stores it back on every iteration.
// kSegments: the reduction is `segments` blocks of kc, each from ARows/Rows::segment (a
// separate instantiation: a runtime branch here slowed the plain kernels by 4-8%).
template <typename ARows, typename Rows, bool kSegments = false>
void gemm_f32_6x16(int64_t kc, ARows a_all, Rows b_all, float* c, int64_t ldc,
                   bool accumulate, int64_t segments = 1, const int64_t* offsets = nullptr) {
  constexpr bool kUnroll = std::is_same_v<ARows, PackedA<float>>;
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  // One pass over a reduction block of kc (a segment), into the accumulators.
  const auto pass = [&](const ARows a, const Rows b_rows) __attribute__((always_inline)) {
    const auto step = [&](int64_t k) __attribute__((always_inline)) {
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
    };
    int64_t k = 0;
    if (kUnroll)  // packed A, B from packed or in-place panels: 6x16 tiles in L1 67 -> 78 GFLOP/s
      for (; k + 4 <= kc; k += 4) {
        step(k);
        step(k + 1);
        step(k + 2);
        step(k + 3);
      }
    for (; k < kc; ++k) step(k);
  };
  if constexpr (kSegments)
    for (int64_t seg = 0; seg < segments; ++seg)
      pass(a_all.segment(seg, kc, offsets), b_all.segment(seg, kc, offsets));
  else
    pass(a_all, b_all);
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

template <typename ARows, typename Rows, bool kSegments = false>
void gemm_f64_6x8(int64_t kc, ARows a_all, Rows b_all, double* c, int64_t ldc,
                  bool accumulate, int64_t segments = 1, const int64_t* offsets = nullptr) {
  __m256d c00 = _mm256_setzero_pd(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256d c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const auto pass = [&](const ARows a, const Rows b_rows) __attribute__((always_inline)) {
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
  };
  if constexpr (kSegments)
    for (int64_t seg = 0; seg < segments; ++seg)
      pass(a_all.segment(seg, kc, offsets), b_all.segment(seg, kc, offsets));
  else
    pass(a_all, b_all);
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

void gemm_ukernel_f32_6x16_indirect_a_segments_avx2(int64_t kc, int64_t segments,
                                                    const float* const* a_rows,
                                                    const int64_t* offsets, const float* b,
                                                    float* c, int64_t ldc, bool accumulate) {
  const PointerA<float> a = {{a_rows[0], a_rows[1], a_rows[2], a_rows[3], a_rows[4], a_rows[5]}};
  gemm_f32_6x16<PointerA<float>, PackedRows<float, 16>, true>(kc, a, PackedRows<float, 16>{b}, c,
                                                             ldc, accumulate, segments, offsets);
}
void gemm_ukernel_f64_6x8_indirect_a_segments_avx2(int64_t kc, int64_t segments,
                                                   const double* const* a_rows,
                                                   const int64_t* offsets, const double* b,
                                                   double* c, int64_t ldc, bool accumulate) {
  const PointerA<double> a = {{a_rows[0], a_rows[1], a_rows[2], a_rows[3], a_rows[4], a_rows[5]}};
  gemm_f64_6x8<PointerA<double>, PackedRows<double, 8>, true>(kc, a, PackedRows<double, 8>{b}, c,
                                                             ldc, accumulate, segments, offsets);
}

void gemm_ukernel_f32_6x16_indirect_ab_avx2(int64_t kc, const float* const* a_rows,
                                            const float* const* b_rows, int64_t b_offset,
                                            float* c, int64_t ldc, bool accumulate) {
  const PointerA<float> a = {{a_rows[0], a_rows[1], a_rows[2], a_rows[3], a_rows[4], a_rows[5]}};
  gemm_f32_6x16(kc, a, PointerRows<float>{b_rows, b_offset}, c, ldc, accumulate);
}
void gemm_ukernel_f64_6x8_indirect_ab_avx2(int64_t kc, const double* const* a_rows,
                                           const double* const* b_rows, int64_t b_offset,
                                           double* c, int64_t ldc, bool accumulate) {
  const PointerA<double> a = {{a_rows[0], a_rows[1], a_rows[2], a_rows[3], a_rows[4], a_rows[5]}};
  gemm_f64_6x8(kc, a, PointerRows<double>{b_rows, b_offset}, c, ldc, accumulate);
}

// Transposes in 8x8 (float) / 4x4 (double) register blocks; the edges element by element.
template <typename T>
void transpose_edges(const T* src, int64_t src_stride, int64_t rows, int64_t cols, int64_t i0,
                     int64_t j0, T* dst, int64_t dst_stride) {
  for (int64_t i = 0; i < rows; ++i)  // columns past the blocks, for every row
    for (int64_t j = j0; j < cols; ++j) dst[j * dst_stride + i] = src[i * src_stride + j];
  for (int64_t i = i0; i < rows; ++i)  // rows past the blocks, block columns
    for (int64_t j = 0; j < j0; ++j) dst[j * dst_stride + i] = src[i * src_stride + j];
}

// In-register transposes: out[j] holds column j of the rows in[0..7] (in[0..3] for doubles).
inline void transpose8x8_ps(const __m256 in[8], __m256 out[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(in[0], in[1]), t1 = _mm256_unpackhi_ps(in[0], in[1]);
  const __m256 t2 = _mm256_unpacklo_ps(in[2], in[3]), t3 = _mm256_unpackhi_ps(in[2], in[3]);
  const __m256 t4 = _mm256_unpacklo_ps(in[4], in[5]), t5 = _mm256_unpackhi_ps(in[4], in[5]);
  const __m256 t6 = _mm256_unpacklo_ps(in[6], in[7]), t7 = _mm256_unpackhi_ps(in[6], in[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  out[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  out[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  out[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  out[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  out[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  out[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  out[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  out[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

inline void transpose4x4_pd(const __m256d in[4], __m256d out[4]) {
  const __m256d t0 = _mm256_unpacklo_pd(in[0], in[1]), t1 = _mm256_unpackhi_pd(in[0], in[1]);
  const __m256d t2 = _mm256_unpacklo_pd(in[2], in[3]), t3 = _mm256_unpackhi_pd(in[2], in[3]);
  out[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
  out[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
  out[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
  out[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

// The rows past the last whole block (fewer than a block: the 1, 3 or 6 channels of a first
// layer) go through the same register transpose, missing rows zero and each column's values
// stored under a mask (element by element, as before, LeNet's second layer forward ran
// 1.08-1.14x longer: its 6 channels never made a whole block).
void transpose_f32_avx2(const float* src, int64_t src_stride, int64_t rows, int64_t cols,
                        float* dst, int64_t dst_stride) {
  const int64_t j_end = cols / 8 * 8;
  for (int64_t i = 0; i < rows; i += 8) {
    const int64_t n = std::min<int64_t>(8, rows - i);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int64_t j = 0; j < j_end; j += 8) {
      __m256 in[8], out[8];
      for (int k = 0; k < 8; ++k)
        in[k] = k < n ? _mm256_loadu_ps(src + (i + k) * src_stride + j) : _mm256_setzero_ps();
      transpose8x8_ps(in, out);
      for (int k = 0; k < 8; ++k) {
        if (n == 8)
          _mm256_storeu_ps(dst + (j + k) * dst_stride + i, out[k]);
        else
          _mm256_maskstore_ps(dst + (j + k) * dst_stride + i, mask, out[k]);
      }
    }
  }
  transpose_edges(src, src_stride, rows, cols, rows, j_end, dst, dst_stride);
}

void transpose_f64_avx2(const double* src, int64_t src_stride, int64_t rows, int64_t cols,
                        double* dst, int64_t dst_stride) {
  const int64_t j_end = cols / 4 * 4;
  for (int64_t i = 0; i < rows; i += 4) {
    const int64_t n = std::min<int64_t>(4, rows - i);
    const __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    for (int64_t j = 0; j < j_end; j += 4) {
      __m256d in[4], out[4];
      for (int k = 0; k < 4; ++k)
        in[k] = k < n ? _mm256_loadu_pd(src + (i + k) * src_stride + j) : _mm256_setzero_pd();
      transpose4x4_pd(in, out);
      for (int k = 0; k < 4; ++k) {
        if (n == 4)
          _mm256_storeu_pd(dst + (j + k) * dst_stride + i, out[k]);
        else
          _mm256_maskstore_pd(dst + (j + k) * dst_stride + i, mask, out[k]);
      }
    }
  }
  transpose_edges(src, src_stride, rows, cols, rows, j_end, dst, dst_stride);
}

void gemm_ukernel_f32_6x16_strided_a_avx2(int64_t kc, const float* a, int64_t lda,
                                          const float* const* b_rows, int64_t b_offset,
                                          float* c, int64_t ldc, bool accumulate) {
  gemm_f32_6x16(kc, StridedA<float>{a, lda}, PointerRows<float>{b_rows, b_offset}, c, ldc,
                accumulate);
}
void gemm_ukernel_f64_6x8_strided_a_avx2(int64_t kc, const double* a, int64_t lda,
                                         const double* const* b_rows, int64_t b_offset,
                                         double* c, int64_t ldc, bool accumulate) {
  gemm_f64_6x8(kc, StridedA<double>{a, lda}, PointerRows<double>{b_rows, b_offset}, c, ldc,
               accumulate);
}

const IsaKernels kAvx2 = {
    "avx2",
    {6, 16, &gemm_ukernel_f32_6x16_avx2, &gemm_ukernel_f32_6x16_indirect_avx2,
     &gemm_ukernel_f32_6x16_indirect_a_avx2, &gemm_ukernel_f32_6x16_strided_a_avx2,
     &gemm_ukernel_f32_6x16_indirect_ab_avx2, &gemm_ukernel_f32_6x16_indirect_a_segments_avx2,
     nullptr},
    {6, 8, &gemm_ukernel_f64_6x8_avx2, &gemm_ukernel_f64_6x8_indirect_avx2,
     &gemm_ukernel_f64_6x8_indirect_a_avx2, &gemm_ukernel_f64_6x8_strided_a_avx2,
     &gemm_ukernel_f64_6x8_indirect_ab_avx2, &gemm_ukernel_f64_6x8_indirect_a_segments_avx2,
     nullptr},
    {&plane_forward<float>, &plane_input_grad<float>, &plane_weight_grad<float>,
     &rows_correlate<float>, &flat_dots<float>, &rows_dots_9<float>},
    {&plane_forward<double>, &plane_input_grad<double>, &plane_weight_grad<double>,
     &rows_correlate<double>, &flat_dots<double>, &rows_dots_9<double>},
    {&winograd_input_panel_f32_avx2<16>, &winograd_output_panel<float, 16>,
     &winograd_input_tile_cl<float>, &winograd_grad_tile_cl<float>},
    {&winograd_input_panel<double, 8>, &winograd_output_panel<double, 8>,
     &winograd_input_tile_cl<double>, &winograd_grad_tile_cl<double>},
    &transpose_f32_avx2,
    &transpose_f64_avx2,
    &kPoolRowKernelsAvx2,
};

}  // namespace

const IsaKernels& isa_kernels_avx2() { return kAvx2; }

}  // namespace fastconv
