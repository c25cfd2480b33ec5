// AVX-512F micro-kernels (compiled with -mavx512f -mavx2 -mfma; reached only through the
// dispatch table after CPU detection). Register budget (32 zmm): 12 accumulators, 2 B vectors,
// broadcasts of A folded into the FMAs ({1toN} memory operands).
//   float : 6 x 32 tile = 6 rows x 2 zmm of 16 floats
//   double: 6 x 16 tile = 6 rows x 2 zmm of 8 doubles
// Per k step: load one NR-wide row of packed B, broadcast 6 values of A, 12 FMAs: the AVX2
// kernel's shape at twice the width, so every caller's panel logic (MR = 6, NR <= 32) holds.
// Only the GEMM tiles and the Winograd panel transforms (whose lanes are NR) are AVX-512 code;
// the plane, pooling and transpose kernels of the table are the AVX2 ones (every AVX-512 CPU
// runs AVX2).
#include <immintrin.h>

#include <type_traits>

#include "microkernel.h"

namespace fastconv {
namespace {

#include "plane_kernels.inc"  // (Vec32, used by the Winograd transforms)
#include "winograd_transforms.inc"
#include "microkernel_operands.inc"

template <typename T>
struct Zmm;
template <>
struct Zmm<float> {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
};
template <>
struct Zmm<double> {
  using V = __m512d;
  static constexpr int kLanes = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static V broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
};

template <typename T>
constexpr int kNR = 2 * Zmm<T>::kLanes;

// One body for both element types (the AVX2 file's two are older); the accumulators are named
// variables, not an array: GCC keeps an array of vectors in memory and stores it back on every
// iteration. kSegments: the reduction is `segments` blocks of kc, each from
// ARows/Rows::segment (a separate instantiation, as in the AVX2 kernels).
template <typename T, typename ARows, typename Rows, bool kSegments = false>
void gemm_6x2v(int64_t kc, ARows a_all, Rows b_all, T* c, int64_t ldc, bool accumulate,
               int64_t segments = 1, const int64_t* offsets = nullptr) {
  using Z = Zmm<T>;
  using V = typename Z::V;
  constexpr int L = Z::kLanes;
  constexpr bool kUnroll = std::is_same_v<ARows, PackedA<T>>;
  V c00 = Z::zero(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  V c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const auto pass = [&](const ARows a, const Rows b_rows) __attribute__((always_inline)) {
    const auto step = [&](int64_t k) __attribute__((always_inline)) {
      const T* b = b_rows.row(k);
      const V b0 = Z::load(b);
      const V b1 = Z::load(b + L);
      V ai = Z::broadcast(a.at(k, 0));
      c00 = Z::fma(ai, b0, c00);
      c01 = Z::fma(ai, b1, c01);
      ai = Z::broadcast(a.at(k, 1));
      c10 = Z::fma(ai, b0, c10);
      c11 = Z::fma(ai, b1, c11);
      ai = Z::broadcast(a.at(k, 2));
      c20 = Z::fma(ai, b0, c20);
      c21 = Z::fma(ai, b1, c21);
      ai = Z::broadcast(a.at(k, 3));
      c30 = Z::fma(ai, b0, c30);
      c31 = Z::fma(ai, b1, c31);
      ai = Z::broadcast(a.at(k, 4));
      c40 = Z::fma(ai, b0, c40);
      c41 = Z::fma(ai, b1, c41);
      ai = Z::broadcast(a.at(k, 5));
      c50 = Z::fma(ai, b0, c50);
      c51 = Z::fma(ai, b1, c51);
    };
    int64_t k = 0;
    if (kUnroll)
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
  const V rows[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int i = 0; i < 6; ++i) {
    T* ci = c + i * ldc;
    V lo = rows[i][0], hi = rows[i][1];
    if (accumulate) {
      lo = Z::add(Z::load(ci), lo);
      hi = Z::add(Z::load(ci + L), hi);
    }
    Z::store(ci, lo);
    Z::store(ci + L, hi);
  }
}

template <typename T>
PointerA<T> pointer_a(const T* const* a_rows) {
  return {{a_rows[0], a_rows[1], a_rows[2], a_rows[3], a_rows[4], a_rows[5]}};
}

template <typename T>
void gemm_ukernel_avx512(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, bool accumulate) {
  gemm_6x2v<T>(kc, PackedA<T>{a}, PackedRows<T, kNR<T>>{b}, c, ldc, accumulate);
}
template <typename T>
void gemm_ukernel_indirect_avx512(int64_t kc, const T* a, const T* const* b_rows,
                                  int64_t b_offset, T* c, int64_t ldc, bool accumulate) {
  gemm_6x2v<T>(kc, PackedA<T>{a}, PointerRows<T>{b_rows, b_offset}, c, ldc, accumulate);
}
template <typename T>
void gemm_ukernel_indirect_a_avx512(int64_t kc, const T* const* a_rows, const T* b, T* c,
                                    int64_t ldc, bool accumulate) {
  gemm_6x2v<T>(kc, pointer_a(a_rows), PackedRows<T, kNR<T>>{b}, c, ldc, accumulate);
}
template <typename T>
void gemm_ukernel_strided_a_avx512(int64_t kc, const T* a, int64_t lda, const T* const* b_rows,
                                   int64_t b_offset, T* c, int64_t ldc, bool accumulate) {
  gemm_6x2v<T>(kc, StridedA<T>{a, lda}, PointerRows<T>{b_rows, b_offset}, c, ldc, accumulate);
}
template <typename T>
void gemm_ukernel_indirect_ab_avx512(int64_t kc, const T* const* a_rows, const T* const* b_rows,
                                     int64_t b_offset, T* c, int64_t ldc, bool accumulate) {
  gemm_6x2v<T>(kc, pointer_a(a_rows), PointerRows<T>{b_rows, b_offset}, c, ldc, accumulate);
}
template <typename T>
void gemm_ukernel_indirect_a_segments_avx512(int64_t kc, int64_t segments, const T* const* a_rows,
                                             const int64_t* offsets, const T* b, T* c,
                                             int64_t ldc, bool accumulate) {
  gemm_6x2v<T, PointerA<T>, PackedRows<T, kNR<T>>, true>(
      kc, pointer_a(a_rows), PackedRows<T, kNR<T>>{b}, c, ldc, accumulate, segments, offsets);
}

template <typename T>
MicroKernel<T> microkernel_avx512(const MicroKernel<T>* avx2) {
  return {6,
          kNR<T>,
          &gemm_ukernel_avx512<T>,
          &gemm_ukernel_indirect_avx512<T>,
          &gemm_ukernel_indirect_a_avx512<T>,
          &gemm_ukernel_strided_a_avx512<T>,
          &gemm_ukernel_indirect_ab_avx512<T>,
          &gemm_ukernel_indirect_a_segments_avx512<T>,
          avx2};
}

// The tile transforms of the weight gradient work on channels, not on NR lanes: AVX2's; so
// does the float input transform of winograd_avx2.cpp, on four blocks of 8 lanes (against the
// portable transform at 32 lanes, bench/ab.py both orders: the forward and input gradient of
// cifar_c2 1.10-1.16x, cifar_c3 1.16-1.28x, resnet_b8 1.09-1.13x).
template <typename T>
WinogradKernels<T> winograd_avx512(const WinogradKernels<T>& avx2) {
  return {&winograd_input_panel<T, kNR<T>>, &winograd_output_panel<T, kNR<T>>, avx2.input_tile,
          avx2.grad_tile};
}
template <>
WinogradKernels<float> winograd_avx512(const WinogradKernels<float>& avx2) {
  return {&winograd_input_panel_f32_avx2<kNR<float>>, &winograd_output_panel<float, kNR<float>>,
          avx2.input_tile, avx2.grad_tile};
}

IsaKernels make_table() {
  const IsaKernels& avx2 = isa_kernels_avx2();
  IsaKernels table = avx2;
  table.name = "avx512";
  table.f32 = microkernel_avx512<float>(&avx2.f32);
  table.f64 = microkernel_avx512<double>(&avx2.f64);
  table.winograd_f32 = winograd_avx512(table.winograd_f32);
  table.winograd_f64 = winograd_avx512(table.winograd_f64);
  return table;
}

}  // namespace

const IsaKernels& isa_kernels_avx512() {
  static const IsaKernels table = make_table();
  return table;
}

}  // namespace fastconv
