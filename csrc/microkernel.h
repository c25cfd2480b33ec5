// The one ISA-specific piece of the GEMM: an MR x NR register-blocked micro-kernel.
//
// Contract of a micro-kernel, for one MR x NR tile of C (row stride ldc, column stride 1):
//   acc[i][j] = sum_{k < kc} a[k*MR + i] * b[k*NR + j]      (summed from zero, k ascending)
//   c[i][j]   = accumulate ? c[i][j] + acc[i][j] : acc[i][j]
// `a` is one packed MR-row panel of A (k-major), `b` one packed NR-column panel of B (k-major).
// Every ISA file defines its kernels inside an anonymous namespace and exports only a table.
// This header must stay free of inline functions: it is included by files compiled with
// AVX2 flags, and an inline function emitted there could be picked by the linker for the
// portable path.
#pragma once

#include <cstdint>

namespace fastconv {

template <typename T>
using MicroKernelFn = void (*)(int64_t kc, const T* a, const T* b, T* c, int64_t ldc,
                               bool accumulate);

// The same tile, with row k of B read from b_rows[k] + b_offset (NR values anywhere in memory):
// lets the convolution point into the image where a panel row is a contiguous run of it,
// instead of copying it into a packed panel; b_offset lets one pointer table serve the
// neighbouring column panels.
template <typename T>
using MicroKernelIndirectFn = void (*)(int64_t kc, const T* a, const T* const* b_rows,
                                       int64_t b_offset, T* c, int64_t ldc, bool accumulate);

// The same tile with row i of A read from a_rows[i] (kc values anywhere in memory, i < MR)
// and B packed: lets a channels-last convolution point at each output pixel's run of input.
template <typename T>
using MicroKernelIndirectAFn = void (*)(int64_t kc, const T* const* a_rows, const T* b, T* c,
                                        int64_t ldc, bool accumulate);

// The same tile with A(i, k) = a[k*lda + i] and B rows through pointers as for `indirect`
// (the Winograd weight gradient's transformed tiles).
template <typename T>
using MicroKernelStridedAFn = void (*)(int64_t kc, const T* a, int64_t lda,
                                       const T* const* b_rows, int64_t b_offset, T* c,
                                       int64_t ldc, bool accumulate);

// The same tile with A's rows through pointers as for `indirect_a` and B's rows as for
// `indirect` (the channels-last weight gradient: dy's rows and the image, both in place).
template <typename T>
using MicroKernelIndirectABFn = void (*)(int64_t kc, const T* const* a_rows,
                                         const T* const* b_rows, int64_t b_offset, T* c,
                                         int64_t ldc, bool accumulate);

// The indirect_a tile over a reduction of `segments` blocks of kc: block seg reads row i of A
// at a_rows[i] + offsets[seg] (kc values) and B's rows seg*kc .. seg*kc + kc-1 (packed), all
// summed in registers (the channels-last forward's window rows, one store per tile).
template <typename T>
using MicroKernelIndirectASegmentsFn = void (*)(int64_t kc, int64_t segments,
                                                const T* const* a_rows, const int64_t* offsets,
                                                const T* b, T* c, int64_t ldc, bool accumulate);

template <typename T>
struct MicroKernel {
  int mr;
  int nr;
  MicroKernelFn<T> fn;
  MicroKernelIndirectFn<T> indirect;
  MicroKernelIndirectAFn<T> indirect_a;
  MicroKernelStridedAFn<T> strided_a;
  MicroKernelIndirectABFn<T> indirect_ab;
  MicroKernelIndirectASegmentsFn<T> indirect_a_segments;
  // The kernels of the next narrower ISA (NR/2), or null: for GEMMs whose columns fill at
  // most half of this one's tile (fitted_microkernel, dispatch.h).
  const MicroKernel<T>* half;
};

// Direct convolution of one plane (depthwise layers), per ISA so that the row loops are
// vectorised for it. Geometry of one input plane (H x W) and its output plane (Ho x Wo):
struct PlaneGeometry {
  int64_t H, W, Ho, Wo, R, S, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  // For window column s: the outputs [lo[s], hi[s]) whose input column
  // wo*stride_w + offset[s] lies inside the plane (offset[s] = s*dil_w - pad_w).
  const int64_t* lo;
  const int64_t* hi;
  const int64_t* offset;
};

// forward:     y    += conv(x, w)           (y preset to the bias by the caller)
// input_grad:  dx   += conv_transpose(dy, w)
// weight_grad: w    += correlation of dy with x   (w: R*S accumulators)
// Stride-1 planes are zero-padded into a buffer of row pitch Wp: window tap t is then a fixed
// offset off[t] = r*dil_h*Wp + s*dil_w, and
//   rows_correlate: out[i][j] = (accumulate ? out[i][j] : init) + sum_t w[t] * in[i*Wp + j + off[t]]
//                   for a dense out (rows x cols)
//   flat_dots:      out[t] += sum_i a[i] * in[i + off[t]]      for t < taps
//   rows_dots_9:    out[t] += sum_{i,j} a[i*cols + j] * in[i*Wp + j + off[t]], 9 taps, dense a
//   rows_dots:      the same for kb dense planes of a (a_stride apart), any taps and several
//                   planes in + in_offsets[w], w < windows, as lane partial sums:
//                   sums[k*k_stride + (w*taps + t)*L + l] += the terms of vector lane l,
//                   L = 32 / sizeof(T), cols >= L (the few-channel weight gradient, conv.cpp)
//   rows_taps:      out[k*out_stride + i*cols + j] = bias[k] (0 if null) + sum_q
//                   w[k*w_stride + q] * in[i*pitch + j + tap_off[q]], k < kb, q < taps, for a
//                   dense out, cols >= L (the few-channel forward pass, conv.cpp)
//   col2im_rows:    plane[ih][iw] = init (accumulate: plane[ih][iw]) + sum over taps
//                   (r, t) < (R, S), in order, of
//                   col[(r*S + t)*Ho*Wo + ho*Wo + wo], ho = ih + pad_h - r*dil_h,
//                   wo = iw + pad_w - t*dil_w, where (ho, wo) lies in Ho x Wo (g's strides 1,
//                   S <= kCol2imRowsMaxS; lo/hi/offset unused); null on the baseline
// flat_dots runs over long contiguous vectors (a few columns per row are computed and dropped).
// The most window columns col2im_rows takes (its lane masks live on the stack).
constexpr int64_t kCol2imRowsMaxS = 16;

template <typename T>
struct PlaneKernels {
  void (*forward)(const PlaneGeometry& g, const T* x, const T* w, T* y);
  void (*input_grad)(const PlaneGeometry& g, const T* dy, const T* w, T* dx);
  void (*weight_grad)(const PlaneGeometry& g, const T* x, const T* dy, T* dw);
  void (*rows_correlate)(int64_t rows, int64_t cols, const T* in, int64_t pitch,
                         const int64_t* off, const T* w, int64_t taps, T init, bool accumulate,
                         T* out);
  void (*flat_dots)(int64_t n, const T* a, const T* in, const int64_t* off, int64_t taps,
                    T* out);
  void (*rows_dots_9)(int64_t rows, int64_t cols, const T* a, const T* in, int64_t pitch,
                      const int64_t* off, T* out);
  void (*rows_dots)(int64_t rows, int64_t cols, const T* a, int64_t a_stride, int64_t kb,
                    const T* in, const int64_t* in_offsets, int64_t windows, int64_t pitch,
                    const int64_t* off, int64_t taps, T* sums, int64_t k_stride);
  void (*rows_taps)(int64_t rows, int64_t cols, const T* in, int64_t pitch,
                    const int64_t* tap_off, int64_t taps, const T* w, int64_t w_stride,
                    int64_t kb, const T* bias, T* out, int64_t out_stride);
  void (*col2im_rows)(const PlaneGeometry& g, const T* col, T init, T* plane,
                      bool accumulate);  // or null
  int vector_registers;  // 32-byte vectors the ISA holds in registers: 32, 16, 8 (baseline)
};

// ISA-specific row kernels of the pooling interior, reached through IsaKernels::pool;
// an ISA without them (null) uses the portable kernels of pool.cpp.
// One call covers `count` consecutive outputs of one output row whose windows lie entirely
// inside the image horizontally (rows are pre-clipped): output l reads the taps
//   xr[i*rstep + c0 + l*sw + j*dw],  i < nrows, j < kw     (i rows of the window, then j)
// Supported: sw 1 or 2, kw >= 2 when sw == 2; count >= 1.
//   max_row: y[l] = max (PyTorch rule), idx[l] (if not null) = idx_base + l*sw + i*rstep + j*dw
//            of the winning tap; needs nrows*rstep < 2^31 (float). y[l] and idx[l] for
//            count <= l < writable may be written too, with values the caller overwrites
//            later (a short row then stores whole vectors instead of masked ones).
//   avg_row: y[l] = (0 + sum of the taps in (i, j) order) / divisor.
template <typename T>
using MaxRowFn = void (*)(const T* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t dw,
                          int64_t sw, int64_t c0, int64_t count, int64_t writable, T* y,
                          int64_t* idx, int64_t idx_base);
template <typename T>
using AvgRowFn = void (*)(const T* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t sw,
                          int64_t c0, int64_t count, T divisor, T* y);
// max_backward_2x2: the 2x2 blocks of one plane of the max-pool backward: output (h, l),
//   h < Ho, l < Wo, has the block of rows 2h, 2h+1 and columns 2l, 2l+1 of dx (row length W,
//   2*Ho <= H, 2*Wo <= W, Wo >= 8); writes those 4*Ho*Wo elements, dy where idx (flat in the plane)
//   points and 0 elsewhere, and nothing else. Returns false, after the first row of blocks
//   holding an index outside its block (dx then unspecified), or at once for rows W of 2^30
//   or more (AVX-512's int32 offsets).
template <typename T>
using MaxBackward2x2Fn = bool (*)(const int64_t* idx, const T* dy, int64_t Ho, int64_t Wo,
                                  int64_t W, T* dx);
// max_backward_2x2_stack (float): the same for planes that the blocks tile exactly
//   (H = 2*Ho, W = 2*Wo) with rows of Wo < 8 outputs, over `rows` rows of the stack of all
//   planes' output rows from stack row h0 on (plane row (h0 + h) % Ho; dy and idx dense, dx
//   rows 2h, 2h+1 at dx + 4*Wo*h); writes all 4*Wo*rows elements. Returns false after the
//   first row holding an index outside its block (dx then unspecified).
using MaxBackward2x2StackFn = bool (*)(const int64_t* idx, const float* dy, int64_t rows,
                                       int64_t h0, int64_t Ho, int64_t Wo, float* dx);
// max_rows / avg_rows: `rows` output rows of `count` outputs, dense in y (and idx), every
//   window inside the image: row h is max_row / avg_row at xr + h*x_step with c0 = 0, its
//   indices (if idx is not null) ((plane_row0 + h) % plane_rows) * x_step + the winner's place
//   in the window (a stack of planes of plane_rows output rows each, the indices within each
//   plane, the first row being row plane_row0 of its plane). Reads stay below
//   xr + readable; writes only the rows' outputs.
template <typename T>
using MaxRowsFn = void (*)(const T* xr, int64_t rows, int64_t x_step, int64_t plane_rows,
                           int64_t plane_row0, int64_t nrows, int64_t rstep, int64_t kw,
                           int64_t dw, int64_t sw, int64_t count, int64_t readable, T* y,
                           int64_t* idx);
template <typename T>
using AvgRowsFn = void (*)(const T* xr, int64_t rows, int64_t x_step, int64_t nrows,
                           int64_t rstep, int64_t kw, int64_t sw, int64_t count, int64_t readable,
                           T divisor, T* y);
struct PoolRowKernels {
  MaxRowFn<float> max_row_f32;
  AvgRowFn<float> avg_row_f32;
  MaxRowFn<double> max_row_f64;
  AvgRowFn<double> avg_row_f64;
  MaxBackward2x2Fn<float> max_backward_2x2_f32;
  MaxBackward2x2Fn<double> max_backward_2x2_f64;
  MaxBackward2x2StackFn max_backward_2x2_stack_f32;  // null: none (float64 scatters)
  MaxRowsFn<float> max_rows_f32;
  AvgRowsFn<float> avg_rows_f32;
  MaxRowsFn<double> max_rows_f64;
  AvgRowsFn<double> avg_rows_f64;
};

// Winograd F(2x2, 3x3) transforms of one panel of NR consecutive 2x2 output tiles (NR = the
// ISA's micro-kernel width for T), per ISA so that their lane loops are vectorised for it.
// Layouts and math: winograd.cpp. Lanes [lane, lane+len) of a run are tiles tj0 .. tj0+len-1
// of tile row ti of image n.
struct WinogradTileRun {
  int64_t n, ti, tj0;
  int lane, len;
};
struct WinogradPanel {
  int64_t C, H, W;      // input channels and plane of the correlation
  int64_t K, Ho, Wo;    // output channels and plane
  int64_t pad_h, pad_w;
  int64_t v_stride;     // elements from one xi's V to the next (>= C * NR)
  const WinogradTileRun* runs;
  int nruns;
};
// input_panel:  v[xi*v_stride + c*NR + lane] = (B^T d B)[xi] of each lane's 4x4 input patch of
//               channel c (lanes past the last run are zero)
// output_panel: the 2x2 tiles of output channels [k0, k0+kn) = A^T M A + bias (bias may be
//               null), where M[xi][k - k0][lane] = m[xi*m_stride + (k - k0)*NR + lane];
//               returns false where a tile value of any lane was an infinity or a NaN
// input_tile, grad_tile: the weight gradient's transforms of one tile, on channels-last
//               copies, vectorised along the channels (see winograd_transforms.inc)
template <typename T>
struct WinogradKernels {
  void (*input_panel)(const WinogradPanel& p, const T* x, T* v);
  bool (*output_panel)(const WinogradPanel& p, const T* m, int64_t m_stride, int64_t k0,
                       int64_t kn, const T* bias, T* y);
  void (*input_tile)(const T* in, int64_t row, int64_t pixel, int64_t channels, T* out,
                     int64_t out_stride);
  void (*grad_tile)(const T* in, int64_t row, int64_t pixel, int64_t channels, T* out,
                    int64_t out_stride);
};

// dst[j*dst_stride + i] = src[i*src_stride + j] for i < rows, j < cols (the channels-last
// copies: rows = channels, cols = pixels of one image row).
template <typename T>
using TransposeFn = void (*)(const T* src, int64_t src_stride, int64_t rows, int64_t cols, T* dst,
                             int64_t dst_stride);

struct IsaKernels {
  const char* name;
  MicroKernel<float> f32;
  MicroKernel<double> f64;
  PlaneKernels<float> planes_f32;
  PlaneKernels<double> planes_f64;
  WinogradKernels<float> winograd_f32;
  WinogradKernels<double> winograd_f64;
  TransposeFn<float> transpose_f32;
  TransposeFn<double> transpose_f64;
  const PoolRowKernels* pool;  // null: the portable pooling kernels
};

// Defined in pool_avx2.cpp and winograd_avx2.cpp (x86 builds only); used only through
// isa_kernels_avx2() and isa_kernels_avx512().
extern const PoolRowKernels kPoolRowKernelsAvx2;
// Defined in pool_avx512.cpp (x86 builds only): avx2's kernels with AVX-512's max backward.
PoolRowKernels pool_kernels_avx512(const PoolRowKernels& avx2);
// NR = 16 (the AVX2 table).
template <int NR>
void winograd_input_panel_f32_avx2(const WinogradPanel& p, const float* x, float* v);
// NR = 32 (the AVX-512 table).
void winograd_input_panel_f32_avx512(const WinogradPanel& p, const float* x, float* v);
// NR = 16 (the AVX2 table).
template <int NR>
bool winograd_output_panel_f32_avx2(const WinogradPanel& p, const float* m, int64_t m_stride,
                                    int64_t k0, int64_t kn, const float* bias, float* y);

const IsaKernels& isa_kernels_baseline();
const IsaKernels& isa_kernels_avx2();  // defined only in x86 builds; call only if the CPU has AVX2+FMA
// Defined only in x86 builds; call only if the CPU has AVX-512F (and AVX2+FMA).
const IsaKernels& isa_kernels_avx512();

}  // namespace fastconv
