// 2-D max and average pooling (NCHW) forward and backward, float and double.
//
// Shapes (the Python layer checks them and computes Ho, Wo):
//   x (N, C, H, W) input, y (N, C, Ho, Wo) output, window kh x kw.
//   window of y[n,c,ho,wo]: rows ho*stride_h - pad_h + i*dil_h, cols wo*stride_w - pad_w + j*dil_w
// Max pooling follows PyTorch's CPU kernel: the window is scanned row by row; a value replaces
// the running maximum when it is greater or NaN; the running maximum starts at -inf with the
// index of the window's first in-bounds element. Indices are h*W + w within each plane.
// Average pooling (dilation 1): divisor = divisor_override if > 0, else the window area clipped
// to the padded input (count_include_pad) or to the input itself.
#pragma once

#include <cstdint>

namespace fastconv {

struct Pool2dShape {
  int64_t N, C, H, W;
  int64_t Ho, Wo;
  int64_t kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

// indices may be null.
template <typename T>
void max_pool2d_forward(const Pool2dShape& s, const T* x, T* y, int64_t* indices);

// dx[n,c] = sum of dy over the outputs whose index points at each element. Returns false,
// leaving dx unspecified, if an index lies outside [0, H*W).
template <typename T>
bool max_pool2d_backward(const Pool2dShape& s, const T* dy, const int64_t* indices, T* dx);

template <typename T>
void avg_pool2d_forward(const Pool2dShape& s, bool count_include_pad, int64_t divisor_override,
                        const T* x, T* y);

template <typename T>
void avg_pool2d_backward(const Pool2dShape& s, bool count_include_pad, int64_t divisor_override,
                         const T* dy, T* dx);

// ISA-specific row kernels of the pooling interior (float), chosen at run time from the active
// ISA (pool.cpp); an ISA without such a table uses the portable kernels of pool.cpp.
// One call covers `count` consecutive outputs of one output row whose windows lie entirely
// inside the image horizontally (rows are pre-clipped): output l reads the taps
//   xr[i*rstep + c0 + l*sw + j*dw],  i < nrows, j < kw     (i rows of the window, then j)
// Supported: sw 1 or 2, kw >= 2 when sw == 2; count >= 1.
//   max_row: y[l] = max (PyTorch rule), idx[l] (if not null) = idx_base + l*sw + i*rstep + j*dw
//            of the winning tap; needs nrows*rstep < 2^31.
//   avg_row: y[l] = (0 + sum of the taps in (i, j) order) / divisor.
// This header must stay free of inline functions (it is included by AVX2-compiled files).
struct PoolRowKernels {
  void (*max_row_f32)(const float* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t dw,
                      int64_t sw, int64_t c0, int64_t count, float* y, int64_t* idx,
                      int64_t idx_base);
  void (*avg_row_f32)(const float* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t sw,
                      int64_t c0, int64_t count, float divisor, float* y);
};

const PoolRowKernels& pool_row_kernels_avx2();  // x86 builds only; call only with AVX2+FMA

}  // namespace fastconv
