// Elementwise activations, forward and backward side by side, on flat arrays of n values
// (any layout: the caller passes contiguous data; outputs must not overlap the inputs).
// PyTorch's semantics:
//   relu_forward:  y  = max(x, 0), NaN stays NaN
//   relu_backward: dx = dy where y > 0, else 0 (threshold_backward: y <= 0 gives 0, NaN keeps dy)
#pragma once

#include <cstdint>

namespace fastconv {

template <typename T>
void relu_forward(int64_t n, const T* x, T* y);

template <typename T>
void relu_backward(int64_t n, const T* y, const T* dy, T* dx);

}  // namespace fastconv
