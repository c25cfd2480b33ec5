// Memory-bound loops, split into blocks over the threads; the compiler vectorises each block
// for the portable target (the work is bandwidth, not instructions).
#include "activation.h"

#include <algorithm>

#include "common.h"
#include "threading.h"

namespace fastconv {
namespace {

constexpr int64_t kBlock = 1 << 15;  // elements per task

template <typename Body>
void for_blocks(int64_t n, const Body& body) {
  const int64_t blocks = ceil_div(n, kBlock);
  parallel_for(blocks, threads_for(double(n), 4.0 * kBlock, blocks), [&](int64_t b, int) {
    body(b * kBlock, std::min(n, (b + 1) * kBlock));
  });
}

// The loops are written over restrict-qualified pointers so that they vectorise (a select
// per lane) instead of branching on the sign of random data.
template <typename T>
void relu_forward_block(const T* __restrict x, T* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < T(0) ? T(0) : x[i];
}

template <typename T>
void relu_backward_block(const T* __restrict y, const T* __restrict dy, T* __restrict dx,
                         int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T g = dy[i];  // loaded unconditionally: a conditional load would not vectorise
    dx[i] = y[i] <= T(0) ? T(0) : g;
  }
}

}  // namespace

template <typename T>
void relu_forward(int64_t n, const T* x, T* y) {
  for_blocks(n, [&](int64_t begin, int64_t end) {
    relu_forward_block(x + begin, y + begin, end - begin);
  });
}

template <typename T>
void relu_backward(int64_t n, const T* y, const T* dy, T* dx) {
  for_blocks(n, [&](int64_t begin, int64_t end) {
    relu_backward_block(y + begin, dy + begin, dx + begin, end - begin);
  });
}

template void relu_forward<float>(int64_t, const float*, float*);
template void relu_forward<double>(int64_t, const double*, double*);
template void relu_backward<float>(int64_t, const float*, const float*, float*);
template void relu_backward<double>(int64_t, const double*, const double*, double*);

}  // namespace fastconv
