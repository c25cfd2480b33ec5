// Portable micro-kernels: plain C++ that the compiler vectorises for the target's baseline
// (SSE2 on x86-64, NEON on aarch64). Also the reference the SIMD kernels are tested against.
#include "microkernel.h"

#include <type_traits>

namespace fastconv {
namespace {

#include "plane_kernels.inc"
#include "winograd_transforms.inc"

// 16-byte vectors of GCC/Clang's vector extension: SSE2 on x86-64, NEON on aarch64.
template <typename T>
struct Vec16Of;
template <>
struct Vec16Of<float> {
  typedef float type __attribute__((vector_size(16)));
};
template <>
struct Vec16Of<double> {
  typedef double type __attribute__((vector_size(16)));
};
template <typename T>
using Vec16 = typename Vec16Of<T>::type;

template <typename T>
inline Vec16<T> load16(const T* p) {
  Vec16<T> v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

// 6 rows x 2 vectors (6x8 floats, 6x4 doubles): twelve named accumulators, which the compiler
// keeps in registers (an array of them would be stored back to memory on every step).
// Row k of B: b_rows(k) (a packed panel, or a pointer table for the indirect kernel).
// Row k of B: b_rows(k); A(i, k): a_at(k, i) (packed a[k*6 + i], or row pointers).
template <typename T, typename ARows, typename Rows>
void gemm_6x2v(int64_t kc, ARows a_at, Rows b_rows, T* c, int64_t ldc, bool accumulate) {
  using V = Vec16<T>;
  constexpr int L = sizeof(V) / sizeof(T);
  V c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {};
  V c30 = {}, c31 = {}, c40 = {}, c41 = {}, c50 = {}, c51 = {};
  for (int64_t k = 0; k < kc; ++k) {
    const T* b = b_rows(k);
    const V b0 = load16(b), b1 = load16(b + L);
    const T a0 = *a_at(k, 0), a1 = *a_at(k, 1), a2 = *a_at(k, 2);
    const T a3 = *a_at(k, 3), a4 = *a_at(k, 4), a5 = *a_at(k, 5);
    c00 += a0 * b0;
    c01 += a0 * b1;
    c10 += a1 * b0;
    c11 += a1 * b1;
    c20 += a2 * b0;
    c21 += a2 * b1;
    c30 += a3 * b0;
    c31 += a3 * b1;
    c40 += a4 * b0;
    c41 += a4 * b1;
    c50 += a5 * b0;
    c51 += a5 * b1;
  }
  const V rows[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int i = 0; i < 6; ++i) {
    T* ci = c + i * ldc;
    for (int half = 0; half < 2; ++half)
      for (int j = 0; j < L; ++j)
        ci[half * L + j] = accumulate ? ci[half * L + j] + rows[i][half][j] : rows[i][half][j];
  }
}

template <typename T>
void gemm_ukernel_baseline(int64_t kc, const T* a, const T* b, T* c, int64_t ldc,
                           bool accumulate) {
  constexpr int64_t NR = 2 * sizeof(Vec16<T>) / sizeof(T);
  gemm_6x2v<T>(kc, [a](int64_t k, int i) { return a + k * 6 + i; },
               [b](int64_t k) { return b + k * NR; }, c, ldc, accumulate);
}

template <typename T>
void gemm_ukernel_indirect_baseline(int64_t kc, const T* a, const T* const* b_rows,
                                    int64_t b_offset, T* c,
                                    int64_t ldc, bool accumulate) {
  gemm_6x2v<T>(kc, [a](int64_t k, int i) { return a + k * 6 + i; },
               [b_rows, b_offset](int64_t k) { return b_rows[k] + b_offset; }, c, ldc,
               accumulate);
}

template <typename T>
void gemm_ukernel_indirect_a_baseline(int64_t kc, const T* const* a_rows, const T* b, T* c,
                                      int64_t ldc, bool accumulate) {
  constexpr int64_t NR = 2 * sizeof(Vec16<T>) / sizeof(T);
  const T* p[6] = {a_rows[0], a_rows[1], a_rows[2], a_rows[3], a_rows[4], a_rows[5]};
  gemm_6x2v<T>(kc, [&p](int64_t k, int i) { return p[i] + k; },
               [b](int64_t k) { return b + k * NR; }, c, ldc, accumulate);
}

template <typename T>
void gemm_ukernel_indirect_a_segments_baseline(int64_t kc, int64_t segments,
                                               const T* const* a_rows, const int64_t* offsets,
                                               const T* b, T* c, int64_t ldc, bool accumulate) {
  constexpr int64_t NR = 2 * sizeof(Vec16<T>) / sizeof(T);
  const T* p[6] = {a_rows[0], a_rows[1], a_rows[2], a_rows[3], a_rows[4], a_rows[5]};
  gemm_6x2v<T>(kc * segments,
               [&p, kc, offsets](int64_t k, int i) { return p[i] + offsets[k / kc] + k % kc; },
               [b](int64_t k) { return b + k * NR; }, c, ldc, accumulate);
}

// Eight rows at a time: eight sequential read streams, one contiguous run written per column.
template <typename T>
void transpose_baseline(const T* src, int64_t src_stride, int64_t rows, int64_t cols, T* dst,
                        int64_t dst_stride) {
  int64_t i0 = 0;
  for (; i0 + 8 <= rows; i0 += 8)
    for (int64_t j = 0; j < cols; ++j)
      for (int i = 0; i < 8; ++i) dst[j * dst_stride + i0 + i] = src[(i0 + i) * src_stride + j];
  for (int64_t i = i0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * dst_stride + i] = src[i * src_stride + j];
}

template <typename T>
void gemm_ukernel_strided_a_baseline(int64_t kc, const T* a, int64_t lda, const T* const* b_rows,
                                     int64_t b_offset, T* c, int64_t ldc, bool accumulate) {
  gemm_6x2v<T>(kc, [a, lda](int64_t k, int i) { return a + k * lda + i; },
               [b_rows, b_offset](int64_t k) { return b_rows[k] + b_offset; }, c, ldc,
               accumulate);
}

template <typename T>
void gemm_ukernel_indirect_ab_baseline(int64_t kc, const T* const* a_rows, const T* const* b_rows,
                                       int64_t b_offset, T* c, int64_t ldc, bool accumulate) {
  const T* p[6] = {a_rows[0], a_rows[1], a_rows[2], a_rows[3], a_rows[4], a_rows[5]};
  gemm_6x2v<T>(kc, [&p](int64_t k, int i) { return p[i] + k; },
               [b_rows, b_offset](int64_t k) { return b_rows[k] + b_offset; }, c, ldc,
               accumulate);
}

const IsaKernels kBaseline = {
    "baseline",
    {6, 8, &gemm_ukernel_baseline<float>, &gemm_ukernel_indirect_baseline<float>,
     &gemm_ukernel_indirect_a_baseline<float>, &gemm_ukernel_strided_a_baseline<float>,
     &gemm_ukernel_indirect_ab_baseline<float>,
     &gemm_ukernel_indirect_a_segments_baseline<float>, nullptr},
    {6, 4, &gemm_ukernel_baseline<double>, &gemm_ukernel_indirect_baseline<double>,
     &gemm_ukernel_indirect_a_baseline<double>, &gemm_ukernel_strided_a_baseline<double>,
     &gemm_ukernel_indirect_ab_baseline<double>,
     &gemm_ukernel_indirect_a_segments_baseline<double>, nullptr},
    {&plane_forward<float>, &plane_input_grad<float>, &plane_weight_grad<float>,
     &rows_correlate<float>, &flat_dots<float>, &rows_dots_9<float>,
     &rows_dots<float, 8>, &rows_taps<float, 8>, nullptr, 8},
    {&plane_forward<double>, &plane_input_grad<double>, &plane_weight_grad<double>,
     &rows_correlate<double>, &flat_dots<double>, &rows_dots_9<double>,
     &rows_dots<double, 8>, &rows_taps<double, 8>, nullptr, 8},
    {&winograd_input_panel<float, 8>, &winograd_output_panel<float, 8>,
     &winograd_input_tile_cl<float>, &winograd_grad_tile_cl<float>},
    {&winograd_input_panel<double, 4>, &winograd_output_panel<double, 4>,
     &winograd_input_tile_cl<double>, &winograd_grad_tile_cl<double>},
    &transpose_baseline<float>,
    &transpose_baseline<double>,
    nullptr,
};

}  // namespace

const IsaKernels& isa_kernels_baseline() { return kBaseline; }

}  // namespace fastconv
