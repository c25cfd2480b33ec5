// 2-D convolution (cross-correlation, NCHW) forward and its two gradients, float and double.
//
// Shapes (the Python layer checks them and computes Ho, Wo; kernels trust only array sizes):
//   x  (N, C, H, W)      input                 w  (K, C/groups, R, S)  weight
//   y  (N, K, Ho, Wo)    output                bias (K) or null
//   y[n,k,ho,wo] = bias[k] + sum_{c,r,s} w[k,c,r,s] * x[n, g*C/groups + c,
//                                              ho*stride_h - pad_h + r*dil_h,
//                                              wo*stride_w - pad_w + s*dil_w]   (0 outside)
// pad_h / pad_w are the top / left padding; the bottom / right padding is whatever Ho / Wo
// imply, so asymmetric ('same') padding needs no extra parameter. Reads outside the image
// are never made, whatever Ho and Wo are. Kernels overwrite their outputs.
#pragma once

#include <cstdint>

namespace fastconv {

struct Conv2dShape {
  int64_t N, C, H, W;  // input
  int64_t K, R, S;     // weight (K, C/groups, R, S)
  int64_t Ho, Wo;      // output
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
};

// y = conv2d(x, w) + bias
template <typename T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y);

// dx = d(sum(dy * conv2d(x, w)))/dx, plus bias[c] on every dx[:, c] when bias is given (this
// is conv_transpose2d(dy, w, bias)).
template <typename T>
void conv2d_input_grad(const Conv2dShape& s, const T* w, const T* dy, const T* bias, T* dx);

// dw = d(sum(dy * conv2d(x, w)))/dw
template <typename T>
void conv2d_weight_grad(const Conv2dShape& s, const T* x, const T* dy, T* dw);

// db[k] = sum over n < N and p < P of dy[n][k][p]: the bias gradient, dy being (N, K, P).
template <typename T>
void conv2d_bias_grad(int64_t N, int64_t K, int64_t P, const T* dy, T* db);

}  // namespace fastconv
