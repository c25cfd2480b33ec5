// Dense matrix product on the packed GEMM, for linear layers: keeps their work on fastconv's
// own thread pool (NumPy's BLAS would start a second pool that competes for the cores).
//
//   C (M x N, row-major, contiguous) = A (M x K) * B (K x N)
//   A[i][k] = a[i*a_row + k*a_col],  B[k][j] = b[k*b_row + j*b_col]
// so either operand may be a transposed view without a copy.
#pragma once

#include <cstdint>

namespace fastconv {

struct MatmulShape {
  int64_t M, N, K;
  int64_t a_row, a_col, b_row, b_col;
};

template <typename T>
void matmul(const MatmulShape& s, const T* a, const T* b, T* c);

}  // namespace fastconv
