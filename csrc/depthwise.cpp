// Depthwise convolution, plane by plane. Output channel k reads input channel c = k / (K/C):
//   forward      y[n,k]   = bias[k] + plane conv of x[n,c] with w[k]       task: (n, k)
//   input grad   dx[n,c]  = bias[c] + sum over its K/C channels k of the    task: (n, c)
//                           transposed plane conv of dy[n,k] with w[k]
//   weight grad  dw[k]    = sum over n of the correlation of dy[n,k], x[n,c] task: k
// Each task owns whole outputs and sums in a fixed order, so the result does not depend on the
// thread count. The plane loops are the ISA's PlaneKernels (plane_kernels.inc).
#include "depthwise.h"

#include <algorithm>
#include <vector>

#include "common.h"
#include "dispatch.h"
#include "threading.h"

namespace fastconv {
namespace {

constexpr double kMinFlopsPerThread = 2e5;

// PlaneGeometry of s, with its column ranges stored in `columns` (3 * S values).
PlaneGeometry plane_geometry(const Conv2dShape& s, std::vector<int64_t>& columns) {
  columns.assign(3 * s.S, 0);
  int64_t* lo = columns.data();
  int64_t* hi = lo + s.S;
  int64_t* offset = hi + s.S;
  for (int64_t j = 0; j < s.S; ++j) {
    offset[j] = j * s.dil_w - s.pad_w;
    inside_range(offset[j], s.stride_w, s.W, s.Wo, &lo[j], &hi[j]);
  }
  return {s.H,     s.W,     s.Ho,    s.Wo,  s.R,  s.S, s.stride_h, s.stride_w,
          s.pad_h, s.pad_w, s.dil_h, s.dil_w, lo, hi, offset};
}

int plane_threads(const Conv2dShape& s, int64_t tasks) {
  return threads_for(2.0 * s.N * s.K * s.Ho * s.Wo * s.R * s.S, kMinFlopsPerThread, tasks);
}

}  // namespace

template <typename T>
void depthwise_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t per_group = s.K / s.groups, HW = s.H * s.W, P = s.Ho * s.Wo, RS = s.R * s.S;
  if (s.N == 0 || s.K == 0 || P == 0) return;
  const PlaneKernels<T> kernels = active_plane_kernels<T>();
  std::vector<int64_t> columns;
  const PlaneGeometry g = plane_geometry(s, columns);
  parallel_for(s.N * s.K, plane_threads(s, s.N * s.K), [&](int64_t task, int) {
    const int64_t n = task / s.K, k = task % s.K, c = k / per_group;
    T* yp = y + task * P;
    std::fill(yp, yp + P, bias ? bias[k] : T(0));
    kernels.forward(g, x + (n * s.C + c) * HW, w + k * RS, yp);
  });
}

template <typename T>
void depthwise_input_grad(const Conv2dShape& s, const T* w, const T* dy, const T* bias, T* dx) {
  const int64_t per_group = s.K / s.groups, HW = s.H * s.W, P = s.Ho * s.Wo, RS = s.R * s.S;
  if (s.N == 0 || s.C == 0 || HW == 0) return;
  const PlaneKernels<T> kernels = active_plane_kernels<T>();
  std::vector<int64_t> columns;
  const PlaneGeometry g = plane_geometry(s, columns);
  parallel_for(s.N * s.C, plane_threads(s, s.N * s.C), [&](int64_t task, int) {
    const int64_t n = task / s.C, c = task % s.C;
    T* dxp = dx + task * HW;
    std::fill(dxp, dxp + HW, bias ? bias[c] : T(0));
    for (int64_t k = c * per_group; k < (c + 1) * per_group; ++k)
      kernels.input_grad(g, dy + (n * s.K + k) * P, w + k * RS, dxp);
  });
}

template <typename T>
void depthwise_weight_grad(const Conv2dShape& s, const T* x, const T* dy, T* dw) {
  const int64_t per_group = s.K / s.groups, HW = s.H * s.W, P = s.Ho * s.Wo, RS = s.R * s.S;
  if (s.K == 0 || RS == 0) return;
  const PlaneKernels<T> kernels = active_plane_kernels<T>();
  std::vector<int64_t> columns;
  const PlaneGeometry g = plane_geometry(s, columns);
  parallel_for(s.K, plane_threads(s, s.K), [&](int64_t k, int) {
    const int64_t c = k / per_group;
    T* dwk = dw + k * RS;
    std::fill(dwk, dwk + RS, T(0));
    for (int64_t n = 0; n < s.N; ++n)
      kernels.weight_grad(g, x + (n * s.C + c) * HW, dy + (n * s.K + k) * P, dwk);
  });
}

#define FASTCONV_INSTANTIATE(T)                                                                \
  template void depthwise_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*);    \
  template void depthwise_input_grad<T>(const Conv2dShape&, const T*, const T*, const T*, T*); \
  template void depthwise_weight_grad<T>(const Conv2dShape&, const T*, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
