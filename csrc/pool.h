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

}  // namespace fastconv
