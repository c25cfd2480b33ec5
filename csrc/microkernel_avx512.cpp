// AVX-512F micro-kernels (compiled with -mavx512f -mavx512vl -mavx2 -mfma; reached only
// through the dispatch table after CPU detection): the tile of microkernel_tile.inc on zmm
// vectors, 12 accumulators, 2 B vectors and a broadcast of 32 zmm registers:
//   float : 6 x 32 tile = 6 rows x 2 zmm of 16 floats
//   double: 6 x 16 tile = 6 rows x 2 zmm of 8 doubles
// The AVX2 kernels' shape at twice the width, so every caller's panel logic (MR = 6,
// NR <= 32) holds. Only the GEMM tiles, the Winograd panel transforms (whose lanes are NR),
// rows_dots and rows_taps (256-bit vectors, but 32 registers: larger tiles), rows_dots_9 and
// rows_correlate (the same code with 32 registers: fewer spills, and rows_dots_9's 3x3 layout
// keeps two accumulator sets; the depthwise layer's weight gradient 1.08-1.17x, forward and
// input gradient 1.02-1.04x, one thread, before the row-pointer kernels; rows_correlate's
// dense windows other than 3x3 take four output rows at a time, kDenseRows), col2im_rows
// (AVX2's code, its lane masks k-masks) and the max-pool backward's 2x2 blocks
// (pool_avx512.cpp) are AVX-512 code; the other plane, pooling and transpose kernels of the
// table are the AVX2 ones (every AVX-512 CPU runs AVX2).
#include <immintrin.h>

#include <algorithm>
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
  using Scalar = float;
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
  using Scalar = double;
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

#include "microkernel_tile.inc"

// The tile transforms of the weight gradient work on channels, not on NR lanes: AVX2's. The
// float input transform is winograd_avx512.cpp's, two blocks of 16 lanes (against AVX2's on
// four blocks of 8, bench/ab.py both orders, --flush, 2 threads: the forward and input
// gradient of cifar_c2 1.05-1.15x, cifar_c3 1.04-1.09x, resnet_b1 and resnet_b8 1.03-1.08x;
// AVX2's had beaten the portable transform at 32 lanes by 1.09-1.28x). The portable output
// transform at 32 lanes stays: AVX2's on four blocks of 8 measured 0.93-0.97x against it.
template <typename T>
WinogradKernels<T> winograd_avx512(const WinogradKernels<T>& avx2) {
  return {&winograd_input_panel<T, kNR<T>>, &winograd_output_panel<T, kNR<T>>, avx2.input_tile,
          avx2.grad_tile};
}
template <>
WinogradKernels<float> winograd_avx512(const WinogradKernels<float>& avx2) {
  return {&winograd_input_panel_f32_avx512, &winograd_output_panel<float, kNR<float>>,
          avx2.input_tile, avx2.grad_tile};
}

IsaKernels make_table() {
  const IsaKernels& avx2 = isa_kernels_avx2();
  IsaKernels table = avx2;
  table.name = "avx512";
  table.f32 = Tile<Zmm<float>>::table(&avx2.f32);
  table.f64 = Tile<Zmm<double>>::table(&avx2.f64);
  table.winograd_f32 = winograd_avx512(table.winograd_f32);
  table.winograd_f64 = winograd_avx512(table.winograd_f64);
  table.planes_f32.rows_dots = &rows_dots<float, 32>;
  table.planes_f64.rows_dots = &rows_dots<double, 32>;
  table.planes_f32.rows_taps = &rows_taps<float, 32>;
  table.planes_f64.rows_taps = &rows_taps<double, 32>;
  table.planes_f32.vector_registers = table.planes_f64.vector_registers = 32;
  table.planes_f32.rows_dots_9 = &rows_dots_9<float>;
  table.planes_f64.rows_dots_9 = &rows_dots_9<double>;
  table.planes_f32.rows_correlate = &rows_correlate<float>;
  table.planes_f64.rows_correlate = &rows_correlate<double>;
  table.planes_f32.col2im_rows = &col2im_rows<float>;
  table.planes_f64.col2im_rows = &col2im_rows<double>;
  static const PoolRowKernels pool = pool_kernels_avx512(*avx2.pool);
  table.pool = &pool;
  return table;
}

}  // namespace

const IsaKernels& isa_kernels_avx512() {
  static const IsaKernels table = make_table();
  return table;
}

}  // namespace fastconv
