// Depthwise convolution, plane by plane. Output channel k reads input channel c = k / (K/C):
//   forward      y[n,k]   = bias[k] + plane conv of x[n,c] with w[k]       task: (n, k)
//   input grad   dx[n,c]  = bias[c] + sum over its K/C channels k of the    task: (n, c)
//                           transposed plane conv of dy[n,k] with w[k]
//   weight grad  dw[k]    = sum over n of the correlation of dy[n,k], x[n,c] task: k
// Stride 1 pads each plane into a scratch buffer, whose window taps are then fixed offsets:
// the forward pass and input gradient write dense output rows straight from it
// (rows_correlate, the bias as the initial value), the weight gradient runs every tap as one
// long flat vector (flat_dots). Strides up to 4 do the same on the padded plane split into
// its stride phases (input_layout) for the weight gradient, and for the forward pass of
// windows over 9 taps; the rest loops over rows (forward, input_grad, weight_grad). Each task
// owns whole outputs and sums in a fixed order, so the result does not depend on the thread
// count. The loops are the ISA's PlaneKernels (plane_kernels.inc).
#include "depthwise.h"

#include <algorithm>
#include <cmath>
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

// Planes as flat vectors (see PlaneKernels): sh*sw zero-padded planes of `rows` rows at row
// `pitch`, one after another, and the flat offset of every window tap.
struct FlatLayout {
  int64_t pitch, rows;
  std::vector<int64_t> offsets;
  int64_t sh = 1, sw = 1;  // stride phases
  int64_t size() const { return sh * sw * rows * pitch; }
};

bool stride_one(const Conv2dShape& s) { return s.stride_h == 1 && s.stride_w == 1; }

// Where the flat layout's phase planes beat the row loops: stride 1; for the weight gradient
// strides up to 4 (measured at stride 2 and 3, 3x3 and 5x5: 2.0-3.1x); for the forward pass,
// whose 3x3 strided rows are cheaper than the copy into phases (0.75-0.9x), windows of more
// than 9 taps (5x5 stride 2: 1.5x).
bool phase_planes_preferred(const Conv2dShape& s, bool forward) {
  if (stride_one(s)) return true;
  return s.stride_h <= 4 && s.stride_w <= 4 && (!forward || s.R * s.S > 9);
}

// Forward and weight gradient: the input padded by (pad_h, pad_w) at the top left and split
// into its stride phases: plane (a, b) holds padded row i*sh + a, column j*sw + b at (i, j),
// so that tap (r, s) reads output (ho, wo) at plane ((r*dh) % sh, (s*dw) % sw), row
// ho + (r*dh) / sh, column wo + (s*dw) / sw, and the outputs are flat positions ho*pitch + wo
// of every tap's run (at stride 1: one plane, the padded input). One spare row keeps the last
// row's taps inside the buffer.
FlatLayout input_layout(const Conv2dShape& s) {
  const int64_t sh = s.stride_h, sw = s.stride_w;
  FlatLayout f{s.Wo + (s.S - 1) * s.dil_w / sw, s.Ho + (s.R - 1) * s.dil_h / sh + 1, {}, sh, sw};
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t j = 0; j < s.S; ++j) {
      const int64_t plane = (r * s.dil_h % sh) * sw + j * s.dil_w % sw;
      f.offsets.push_back((plane * f.rows + r * s.dil_h / sh) * f.pitch + j * s.dil_w / sw);
    }
  return f;
}

// Input gradient = correlation of the output gradient, padded by the kernel extent minus the
// padding, with the flipped kernel: offsets[r*S + s] belongs to tap (R-1-r, S-1-s).
int64_t grad_top(const Conv2dShape& s) { return (s.R - 1) * s.dil_h - s.pad_h; }
int64_t grad_left(const Conv2dShape& s) { return (s.S - 1) * s.dil_w - s.pad_w; }

FlatLayout grad_layout(const Conv2dShape& s) {
  FlatLayout f{std::max(s.W + (s.S - 1) * s.dil_w, s.Wo + grad_left(s)),
               std::max(s.H + (s.R - 1) * s.dil_h + 1, s.Ho + grad_top(s)), {}};
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t j = 0; j < s.S; ++j)
      f.offsets.push_back((s.R - 1 - r) * s.dil_h * f.pitch + (s.S - 1 - j) * s.dil_w);
  return f;
}

// src (src_rows x cols) copied into the padded plane dst (rows x pitch) at (top, left); what
// does not fit is dropped. The padding itself is never written: the caller zeroes the scratch
// once per call, and every plane copied into it covers the same positions.
template <typename T>
void pad_plane(const T* src, int64_t src_rows, int64_t cols, int64_t top, int64_t left,
               const FlatLayout& f, T* dst) {
  const int64_t width = std::min(cols, f.pitch - left);
  if (width <= 0) return;
  for (int64_t i = 0; i < src_rows && i + top < f.rows; ++i)
    copy_run(src + i * cols, width, dst + (i + top) * f.pitch + left);
}

// The plane src (H x W) padded by (pad_h, pad_w) into the stride phases of f (see
// input_layout); what does not fit is dropped and, as for pad_plane, the padding is never
// written.
template <typename T>
void pad_phase_planes(const T* src, int64_t H, int64_t W, int64_t pad_h, int64_t pad_w,
                      const FlatLayout& f, T* dst) {
  if (f.sh == 1 && f.sw == 1) return pad_plane(src, H, W, pad_h, pad_w, f, dst);
  const int64_t plane = f.rows * f.pitch;
  for (int64_t ih = 0; ih < H; ++ih) {
    const int64_t i = (ih + pad_h) / f.sh, a = (ih + pad_h) % f.sh;
    if (i >= f.rows) break;
    const T* row = src + ih * W;
    for (int64_t b = 0; b < f.sw; ++b) {
      // columns iw = j*sw + b - pad_w of the image, j < pitch
      const int64_t j_begin = std::max<int64_t>(0, ceil_div(pad_w - b, f.sw));
      const int64_t j_end = std::min(f.pitch, ceil_div(W + pad_w - b, f.sw));
      T* out = dst + (a * f.sw + b) * plane + i * f.pitch;
      for (int64_t j = j_begin; j < j_end; ++j) out[j] = row[j * f.sw + b - pad_w];
    }
  }
}

}  // namespace

template <typename T>
void depthwise_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t per_group = s.K / s.groups, HW = s.H * s.W, P = s.Ho * s.Wo, RS = s.R * s.S;
  if (s.N == 0 || s.K == 0 || P == 0) return;
  const PlaneKernels<T> kernels = active_plane_kernels<T>();
  const int nthreads = plane_threads(s, s.N * s.K);
  if (phase_planes_preferred(s, true)) {
    const FlatLayout f = input_layout(s);
    const int64_t per_thread = f.size();
    T* scratch = thread_scratch<T>(kScratchColumns, nthreads * per_thread);
    std::fill(scratch, scratch + nthreads * per_thread, T(0));
    parallel_for_runs(s.N * s.K, nthreads, [&](int64_t task, int thread) {
      const int64_t n = task / s.K, k = task % s.K, c = k / per_group;
      T* xpad = scratch + thread * per_thread;
      pad_phase_planes(x + (n * s.C + c) * HW, s.H, s.W, s.pad_h, s.pad_w, f, xpad);
      kernels.rows_correlate(s.Ho, s.Wo, xpad, f.pitch, f.offsets.data(), w + k * RS, RS,
                             bias ? bias[k] : T(0), false, y + task * P);
    });
    return;
  }
  std::vector<int64_t> columns;
  const PlaneGeometry g = plane_geometry(s, columns);
  parallel_for_runs(s.N * s.K, nthreads, [&](int64_t task, int) {
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
  const int nthreads = plane_threads(s, s.N * s.C);
  if (stride_one(s) && grad_top(s) >= 0 && grad_left(s) >= 0) {
    const FlatLayout f = grad_layout(s);
    const int64_t per_thread = f.rows * f.pitch;
    T* scratch = thread_scratch<T>(kScratchColumns, nthreads * per_thread);
    std::fill(scratch, scratch + nthreads * per_thread, T(0));
    parallel_for_runs(s.N * s.C, nthreads, [&](int64_t task, int thread) {
      const int64_t n = task / s.C, c = task % s.C;
      T* dypad = scratch + thread * per_thread;
      for (int64_t k = c * per_group; k < (c + 1) * per_group; ++k) {
        pad_plane(dy + (n * s.K + k) * P, s.Ho, s.Wo, grad_top(s), grad_left(s), f, dypad);
        kernels.rows_correlate(s.H, s.W, dypad, f.pitch, f.offsets.data(), w + k * RS, RS,
                               bias ? bias[c] : T(0), k > c * per_group, dx + task * HW);
      }
    });
    return;
  }
  std::vector<int64_t> columns;
  const PlaneGeometry g = plane_geometry(s, columns);
  parallel_for_runs(s.N * s.C, nthreads, [&](int64_t task, int) {
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
  const int nthreads = plane_threads(s, s.K);
  std::vector<int64_t> columns;
  const PlaneGeometry g = plane_geometry(s, columns);
  const auto rows_weight_grad = [&](int64_t k) {
    const int64_t c = k / per_group;
    T* dwk = dw + k * RS;
    std::fill(dwk, dwk + RS, T(0));
    for (int64_t n = 0; n < s.N; ++n)
      kernels.weight_grad(g, x + (n * s.C + c) * HW, dy + (n * s.K + k) * P, dwk);
  };
  if (phase_planes_preferred(s, false)) {
    const FlatLayout f = input_layout(s);
    const FlatLayout rows_of_dy{f.pitch, s.Ho, {}};
    const int64_t per_thread = f.size() + s.Ho * f.pitch;
    T* scratch = thread_scratch<T>(kScratchColumns, nthreads * per_thread);
    std::fill(scratch, scratch + nthreads * per_thread, T(0));
    // Tasks: blocks of consecutive channels, images outer, so that a task streams through
    // runs of contiguous planes. With one channel per task, images inner, it jumped a batch
    // stride after every 3 KB plane: with x and dy out of the caches (as next to PyTorch's
    // calls) the suite's depthwise layer took 1.2-1.4x longer. Each dW[k] still sums its
    // images in order.
    const int64_t block = std::max<int64_t>(1, s.K / (4 * nthreads));
    parallel_for(ceil_div(s.K, block), nthreads, [&](int64_t task, int thread) {
      const int64_t k_begin = task * block, k_end = std::min(s.K, k_begin + block);
      T* xpad = scratch + thread * per_thread;
      T* dybuf = xpad + f.size();
      std::fill(dw + k_begin * RS, dw + k_end * RS, T(0));
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t k = k_begin; k < k_end; ++k) {
          pad_phase_planes(x + (n * s.C + k / per_group) * HW, s.H, s.W, s.pad_h, s.pad_w, f,
                           xpad);
          if (RS == 9) {  // 3x3: dy read in place (measured: depthwise weight grad 1.5-1.6x)
            kernels.rows_dots_9(s.Ho, s.Wo, dy + (n * s.K + k) * P, xpad, f.pitch,
                                f.offsets.data(), dw + k * RS);
            continue;
          }
          pad_plane(dy + (n * s.K + k) * P, s.Ho, s.Wo, 0, 0, rows_of_dy, dybuf);
          kernels.flat_dots(s.Ho * f.pitch, dybuf, xpad, f.offsets.data(), RS, dw + k * RS);
        }
      // The flat vectors' dropped columns (zeros of dy) meet pixels of x that no window
      // uses; an infinity or NaN there would make 0 * inf = NaN in dW, where PyTorch's sum
      // has none. Any non-finite dW is therefore recomputed row by row, exactly.
      for (int64_t k = k_begin; k < k_end; ++k)
        if (!std::all_of(dw + k * RS, dw + (k + 1) * RS, [](T v) { return std::isfinite(v); }))
          rows_weight_grad(k);
    });
    return;
  }
  parallel_for(s.K, nthreads, [&](int64_t k, int) { rows_weight_grad(k); });
}

#define FASTCONV_INSTANTIATE(T)                                                                \
  template void depthwise_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*);    \
  template void depthwise_input_grad<T>(const Conv2dShape&, const T*, const T*, const T*, T*); \
  template void depthwise_weight_grad<T>(const Conv2dShape&, const T*, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
