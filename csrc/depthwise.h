// Direct convolution for one input channel per group (depthwise: groups == C; also C == 1),
// forward and both gradients, float and double. Same shapes and semantics as conv.h; a GEMM
// would waste most of each micro-kernel tile on its single-channel reduction.
#pragma once

#include "conv.h"

namespace fastconv {

// One input channel per group and few outputs per group: the direct kernels are faster.
inline bool depthwise_preferred(const Conv2dShape& s) {
  return s.groups > 0 && s.C == s.groups && s.K / s.groups <= 8;
}

template <typename T>
void depthwise_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y);

template <typename T>
void depthwise_input_grad(const Conv2dShape& s, const T* w, const T* dy, const T* bias, T* dx);

template <typename T>
void depthwise_weight_grad(const Conv2dShape& s, const T* x, const T* dy, T* dw);

}  // namespace fastconv
