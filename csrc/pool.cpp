// Pooling kernels. Each task is one (n, c) plane; inside a plane the loops run over output
// rows, then window offsets (i, j), then a contiguous run of outputs wo, so the innermost loop
// is branch-free and vectorisable, while each output still sees its window in row-major order.
#include "pool.h"

#include <algorithm>
#include <atomic>
#include <limits>

#include "common.h"
#include "threading.h"

namespace fastconv {
namespace {

constexpr double kMinOpsPerThread = 1e5;

template <typename T, bool kIndices>
void max_pool_plane(const Pool2dShape& s, const T* x, T* y, int64_t* indices) {
  for (int64_t ho = 0; ho < s.Ho; ++ho) {
    const int64_t ih0 = ho * s.stride_h - s.pad_h;
    int64_t i_lo, i_hi;  // window rows inside the image
    inside_range(ih0, s.dil_h, s.H, s.kh, &i_lo, &i_hi);
    T* yrow = y + ho * s.Wo;
    int64_t* irow = kIndices ? indices + ho * s.Wo : nullptr;
    const int64_t first_ih = ih0 + i_lo * s.dil_h;
    for (int64_t wo = 0; wo < s.Wo; ++wo) {
      const int64_t iw0 = wo * s.stride_w - s.pad_w;
      const int64_t first_iw = iw0 >= 0 ? iw0 : iw0 + ceil_div(-iw0, s.dil_w) * s.dil_w;
      yrow[wo] = -std::numeric_limits<T>::infinity();
      if (kIndices) irow[wo] = first_ih * s.W + first_iw;
    }
    for (int64_t i = i_lo; i < i_hi; ++i) {
      const int64_t ih = ih0 + i * s.dil_h;
      const T* xrow = x + ih * s.W;
      for (int64_t j = 0; j < s.kw; ++j) {
        const int64_t off = j * s.dil_w - s.pad_w;
        int64_t lo, hi;
        inside_range(off, s.stride_w, s.W, s.Wo, &lo, &hi);
        for (int64_t wo = lo; wo < hi; ++wo) {
          const int64_t iw = wo * s.stride_w + off;
          const T v = xrow[iw];
          const bool take = v > yrow[wo] || v != v;  // NaN wins, as in PyTorch
          yrow[wo] = take ? v : yrow[wo];
          if (kIndices) irow[wo] = take ? ih * s.W + iw : irow[wo];
        }
      }
    }
  }
}

// Window bounds of avg pooling along one axis for output o: the clipped range [lo, hi) and the
// size of the window clipped to the padded input (PyTorch's pool_size factor).
struct AvgWindow {
  int64_t lo, hi, padded;
};

inline AvgWindow avg_window(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t size) {
  const int64_t start = o * stride - pad;
  const int64_t end = std::min(start + k, size + pad);
  return {std::max<int64_t>(start, 0), std::min(end, size), end - start};
}

// The divisor of avg pooling for the window (hw, ww); 0 when the window holds no input.
inline int64_t avg_divisor(const AvgWindow& hw, const AvgWindow& ww, bool count_include_pad,
                           int64_t divisor_override) {
  if (hw.hi <= hw.lo || ww.hi <= ww.lo) return 0;
  if (divisor_override > 0) return divisor_override;
  return count_include_pad ? hw.padded * ww.padded : (hw.hi - hw.lo) * (ww.hi - ww.lo);
}

template <typename T>
void avg_pool_plane(const Pool2dShape& s, bool count_include_pad, int64_t divisor_override,
                    const T* x, T* y) {
  for (int64_t ho = 0; ho < s.Ho; ++ho) {
    const AvgWindow hw = avg_window(ho, s.stride_h, s.pad_h, s.kh, s.H);
    T* yrow = y + ho * s.Wo;
    std::fill(yrow, yrow + s.Wo, T(0));
    for (int64_t ih = hw.lo; ih < hw.hi; ++ih) {
      const T* xrow = x + ih * s.W;
      for (int64_t j = 0; j < s.kw; ++j) {
        const int64_t off = j - s.pad_w;
        int64_t lo, hi;
        inside_range(off, s.stride_w, s.W, s.Wo, &lo, &hi);
        for (int64_t wo = lo; wo < hi; ++wo) yrow[wo] += xrow[wo * s.stride_w + off];
      }
    }
    for (int64_t wo = 0; wo < s.Wo; ++wo) {
      const AvgWindow ww = avg_window(wo, s.stride_w, s.pad_w, s.kw, s.W);
      const int64_t div = avg_divisor(hw, ww, count_include_pad, divisor_override);
      yrow[wo] = div ? yrow[wo] / static_cast<T>(div) : T(0);
    }
  }
}

// grow: scratch of Wo elements.
template <typename T>
void avg_pool_backward_plane(const Pool2dShape& s, bool count_include_pad,
                             int64_t divisor_override, const T* dy, T* dx, T* grow) {
  std::fill(dx, dx + s.H * s.W, T(0));
  for (int64_t ho = 0; ho < s.Ho; ++ho) {
    const AvgWindow hw = avg_window(ho, s.stride_h, s.pad_h, s.kh, s.H);
    for (int64_t wo = 0; wo < s.Wo; ++wo) {
      const AvgWindow ww = avg_window(wo, s.stride_w, s.pad_w, s.kw, s.W);
      const int64_t div = avg_divisor(hw, ww, count_include_pad, divisor_override);
      grow[wo] = div ? dy[ho * s.Wo + wo] / static_cast<T>(div) : T(0);
    }
    for (int64_t ih = hw.lo; ih < hw.hi; ++ih) {
      T* dxrow = dx + ih * s.W;
      for (int64_t j = 0; j < s.kw; ++j) {
        const int64_t off = j - s.pad_w;
        int64_t lo, hi;
        inside_range(off, s.stride_w, s.W, s.Wo, &lo, &hi);
        for (int64_t wo = lo; wo < hi; ++wo) dxrow[wo * s.stride_w + off] += grow[wo];
      }
    }
  }
}

int plane_threads(const Pool2dShape& s, double ops_per_output) {
  return threads_for(double(s.N) * s.C * s.Ho * s.Wo * ops_per_output, kMinOpsPerThread, s.N * s.C);
}

}  // namespace

template <typename T>
void max_pool2d_forward(const Pool2dShape& s, const T* x, T* y, int64_t* indices) {
  const int64_t HW = s.H * s.W, P = s.Ho * s.Wo;
  parallel_for(s.N * s.C, plane_threads(s, double(s.kh) * s.kw), [&](int64_t plane, int) {
    if (indices)
      max_pool_plane<T, true>(s, x + plane * HW, y + plane * P, indices + plane * P);
    else
      max_pool_plane<T, false>(s, x + plane * HW, y + plane * P, nullptr);
  });
}

template <typename T>
bool max_pool2d_backward(const Pool2dShape& s, const T* dy, const int64_t* indices, T* dx) {
  const int64_t HW = s.H * s.W, P = s.Ho * s.Wo;
  std::atomic<bool> ok{true};
  parallel_for(s.N * s.C, plane_threads(s, 2.0), [&](int64_t plane, int) {
    T* dxp = dx + plane * HW;
    const T* dyp = dy + plane * P;
    const int64_t* ip = indices + plane * P;
    std::fill(dxp, dxp + HW, T(0));
    for (int64_t o = 0; o < P; ++o) {
      const int64_t i = ip[o];
      if (!inside(i, HW)) {
        ok.store(false, std::memory_order_relaxed);
        return;
      }
      dxp[i] += dyp[o];
    }
  });
  return ok.load();
}

template <typename T>
void avg_pool2d_forward(const Pool2dShape& s, bool count_include_pad, int64_t divisor_override,
                        const T* x, T* y) {
  const int64_t HW = s.H * s.W, P = s.Ho * s.Wo;
  parallel_for(s.N * s.C, plane_threads(s, double(s.kh) * s.kw), [&](int64_t plane, int) {
    avg_pool_plane(s, count_include_pad, divisor_override, x + plane * HW, y + plane * P);
  });
}

template <typename T>
void avg_pool2d_backward(const Pool2dShape& s, bool count_include_pad, int64_t divisor_override,
                         const T* dy, T* dx) {
  const int64_t HW = s.H * s.W, P = s.Ho * s.Wo;
  const int nthreads = plane_threads(s, double(s.kh) * s.kw);
  AlignedBuffer<T> rows(nthreads * std::max<int64_t>(s.Wo, 1));
  parallel_for(s.N * s.C, nthreads, [&](int64_t plane, int thread) {
    avg_pool_backward_plane(s, count_include_pad, divisor_override, dy + plane * P,
                            dx + plane * HW, rows.data() + thread * std::max<int64_t>(s.Wo, 1));
  });
}

#define FASTCONV_INSTANTIATE(T)                                                              \
  template void max_pool2d_forward<T>(const Pool2dShape&, const T*, T*, int64_t*);           \
  template bool max_pool2d_backward<T>(const Pool2dShape&, const T*, const int64_t*, T*);    \
  template void avg_pool2d_forward<T>(const Pool2dShape&, bool, int64_t, const T*, T*);      \
  template void avg_pool2d_backward<T>(const Pool2dShape&, bool, int64_t, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
