// Winograd F(2x2, 3x3) convolution for 3x3, stride-1, undilated, ungrouped layers: the forward
// pass, the input gradient as the same algorithm on the flipped, transposed weights, and the
// weight gradient from the same input tiles and the matching output-gradient tiles. Same
// shapes and semantics as conv.h. It does 2.25x fewer multiplications than the GEMM path, with
// rounding errors of the same order (its transforms only add, subtract and halve).
#pragma once

#include "conv.h"

namespace fastconv {

// Whether the Winograd path takes this layer, under the algorithm chosen by
// set_conv_algorithm ("auto": only where it pays, "winograd": wherever it applies, "gemm": never).
bool winograd_preferred(const Conv2dShape& s);

// Whether a[0, n) and b[0, m) hold only finite values. The transforms mix an infinity with its
// neighbours (inf - inf = NaN where a direct sum gives +-inf), so the callers take the GEMM
// path, whose results propagate NaN and infinities as PyTorch's do, for any other input.
template <typename T>
bool all_finite(const T* a, int64_t n, const T* b, int64_t m);

// Return false, with y (dx) holding an infinity or a NaN, where an output was non-finite:
// a non-finite value of x (dy) that an output's window meets reaches that output's tile
// through the transforms (as inf or NaN), so the caller need not scan the input first (its
// own pass: 5% of cifar_c2's forward) and takes the GEMM path for the answer PyTorch gives.
// The weights are the caller's to check.
template <typename T>
bool winograd_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y);

template <typename T>
bool winograd_input_grad(const Conv2dShape& s, const T* w, const T* dy, const T* bias, T* dx);

// Returns false, with dw holding an infinity or a NaN, where x or dy did (or the sums
// overflowed): every non-finite input reaches dW through the products, so the caller need not
// scan x and dy first, and takes the GEMM path for the answer PyTorch gives. Also for dilated
// layers whose dilation divides H, W and the padding (conv.cpp's dilation_phases_preferred):
// their stride phases are undilated Winograd layers, read in place.
template <typename T>
bool winograd_weight_grad(const Conv2dShape& s, const T* x, const T* dy, T* dw);

}  // namespace fastconv
