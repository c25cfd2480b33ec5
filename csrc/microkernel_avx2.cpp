// AVX2+FMA micro-kernels (compiled with -mavx2 -mfma; reached only through the dispatch table
// after CPU detection): the tile of microkernel_tile.inc on ymm vectors, 12 accumulators,
// 2 B vectors and a broadcast of 16 ymm registers:
//   float : 6 x 16 tile = 6 rows x 2 ymm of 8 floats
//   double: 6 x 8 tile  = 6 rows x 2 ymm of 4 doubles
#include <immintrin.h>

#include <algorithm>
#include <type_traits>

#include "microkernel.h"

namespace fastconv {
namespace {

#include "plane_kernels.inc"
#include "winograd_transforms.inc"
#include "microkernel_operands.inc"

template <typename T>
struct Ymm;
template <>
struct Ymm<float> {
  using Scalar = float;
  using V = __m256;
  static constexpr int kLanes = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
};
template <>
struct Ymm<double> {
  using Scalar = double;
  using V = __m256d;
  static constexpr int kLanes = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
};

#include "microkernel_tile.inc"

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

// constexpr: filled at compile time, so that no AVX2 code runs at load on a CPU without it.
constexpr IsaKernels kAvx2 = {
    "avx2",
    Tile<Ymm<float>>::table(nullptr),
    Tile<Ymm<double>>::table(nullptr),
    {&plane_forward<float>, &plane_input_grad<float>, &plane_weight_grad<float>,
     &rows_correlate<float>, &flat_dots<float>, &rows_dots_9<float>,
     &rows_dots<float, 16>, &rows_taps<float, 16>, &col2im_rows<float>, 16},
    {&plane_forward<double>, &plane_input_grad<double>, &plane_weight_grad<double>,
     &rows_correlate<double>, &flat_dots<double>, &rows_dots_9<double>,
     &rows_dots<double, 16>, &rows_taps<double, 16>, &col2im_rows<double>, 16},
    {&winograd_input_panel_f32_avx2<16>, &winograd_output_panel_f32_avx2<16>,
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
