// Pooling kernels (NCHW). Threads take tasks of (plane, block of rows), so that a batch of one
// with few channels still spreads over the threads; every output is written by exactly one
// task, in a fixed order, so results do not depend on the thread count.
//
// max / avg forward, per output row ho (window rows clipped to the image once per row):
//   - border outputs (window hangs over the left/right edge): one output at a time, scalar.
//   - interior outputs [wa, wb) (all kw taps inside the row): blocks of consecutive outputs,
//     the taps (i, j) in row-major window order as the outer loops and the block's outputs as
//     the inner, vectorised loop: running max + a small window-offset code (int32 for float)
//     per lane, blended on "v > max || v is NaN"; the int64 index h*W + w is formed once at
//     the end. The last block is shifted back to end at wb (it recomputes a few outputs).
//     Stride 2 loads are deinterleaved even/odd columns. With AVX2 the row kernel is
//     pool_avx2.cpp's (through the dispatch table), else the portable template below (GCC
//     vectorises it for the baseline; float64 max forward ran 10x slower than float32 there).
//   windows that tile the planes' rows (no padding, H = Ho*sh: LeNet's 2x2 pools): all planes
//     as one stack of rows, each task's block of it in one call of the ISA's rows kernel
//     (stacked_rows).
// avg backward, windows side by side (k == stride, no padding): each dy row is scaled once and
//   copied along its dx rows (avg_backward_disjoint_rows).
// avg backward otherwise is a gather: each dx row is computed once, phase by phase (dx columns
//   q = m*sw + r), as contiguous vector sums of the scaled dy rows g = dy / divisor:
//     acc_r[m] = 0 + sum_{ho asc} sum_{j desc, (r - j + pw) % sw == 0} g_ho[m + (r - j + pw)/sw]
//   then interleaved into dx. The order (ho ascending, then wo ascending) is PyTorch's
//   scatter order; g rows are padded with -0.0, which adds exactly nothing.
// max backward: per plane, zero the dx plane (it stays in L1/L2) and scatter-add dy at the
//   indices (arbitrary indices are allowed, so no gather formulation). Where every index
//   lies in its own 2x2 block (a 2x2 stride-2 pool) and rows have >= 8 outputs, the ISA's
//   vectorised select writes each dx element once instead (max_backward_disjoint_2x2), and
//   where such blocks tile the planes with shorter rows (float, AVX-512) it does so over the
//   stack of all planes' rows, a task's block in one call; a plane (or with the stack, the
//   call) with any other index is scattered. A gradient of 16 MiB or more (more than the
//   L3 keeps of it) is scattered into an L2 scratch plane and streamed into dx with
//   non-temporal stores, which skip reading dx's lines before writing them (k3s2p1 on
//   8x64x112x112, A/B both orders on Zen 3 at 2 threads: 1.08-1.31x, caches flushed
//   1.12-1.33x, float64 1.18-1.3x; 1 thread, not bound by memory, 0.93-1.07x).
#include "pool.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "common.h"
#include "dispatch.h"
#include "threading.h"

namespace fastconv {
namespace {

constexpr double kMinOpsPerThread = 1e5;
constexpr int kBlock = 16;  // outputs per portable interior block

// The active ISA's row kernels, or null for the portable ones.
const PoolRowKernels* active_pool_kernels() { return active_isa().pool; }

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Tasks of row blocks: `blocks` per plane, rows [b*rows/blocks, (b+1)*rows/blocks).
int64_t row_blocks(int64_t planes, int64_t rows, int nthreads) {
  if (nthreads <= 1 || planes >= 8 * nthreads || rows <= 1) return 1;
  return std::min<int64_t>(rows, ceil_div(8 * nthreads, std::max<int64_t>(planes, 1)));
}

template <typename Body>
void for_row_blocks(int64_t planes, int64_t rows, int nthreads, const Body& body) {
  const int64_t blocks = row_blocks(planes, rows, nthreads);
  if (blocks == 1)
    return parallel_for_runs(planes, nthreads,
                             [&](int64_t plane, int thread) { body(plane, 0, rows, thread); });
  parallel_for(planes * blocks, nthreads, [&](int64_t task, int thread) {
    const int64_t plane = task / blocks, b = task % blocks;
    body(plane, b * rows / blocks, (b + 1) * rows / blocks, thread);
  });
}

// Work of a pass: its outputs' window taps, plus what each output row costs on its own (a row
// kernel call and the edges, about 32 taps' worth: 64x16x10x10 k2 took 0.24 ms on one thread
// while the taps alone counted as too little work for two).
int pool_threads(const Pool2dShape& s, double ops_per_output, int64_t rows) {
  constexpr double kOpsPerRow = 32;
  return threads_for(double(s.N) * s.C * s.Ho * (s.Wo * ops_per_output + kOpsPerRow),
                     kMinOpsPerThread, s.N * s.C * std::max<int64_t>(rows, 1));
}

// ------------------------------------------------------------------------------------------
// max pooling
// ------------------------------------------------------------------------------------------

// One output with the general rule, window clipped to the image (border outputs).
template <typename T>
inline void max_one(const Pool2dShape& s, const T* x, int64_t ih0, int64_t i_lo, int64_t i_hi,
                    int64_t wo, T* yo, int64_t* io) {
  const int64_t iw0 = wo * s.stride_w - s.pad_w;
  int64_t j_lo, j_hi;
  inside_range(iw0, s.dil_w, s.W, s.kw, &j_lo, &j_hi);
  const int64_t first_ih = ih0 + i_lo * s.dil_h;
  const int64_t first_iw = iw0 >= 0 ? iw0 : iw0 + ceil_div(-iw0, s.dil_w) * s.dil_w;
  T best = -std::numeric_limits<T>::infinity();
  int64_t bi = first_ih * s.W + first_iw;
  for (int64_t i = i_lo; i < i_hi; ++i) {
    const int64_t ih = ih0 + i * s.dil_h;
    const T* xrow = x + ih * s.W;
    for (int64_t j = j_lo; j < j_hi; ++j) {
      const int64_t iw = iw0 + j * s.dil_w;
      const T v = xrow[iw];
      const bool take = (v > best) | (v != v);  // NaN wins, as in PyTorch; no branch to miss
      best = take ? v : best;
      bi = take ? ih * s.W + iw : bi;
    }
  }
  *yo = best;
  if (io) *io = bi;
}

// Portable interior row kernel (contract of PoolRowKernels::max_row_*, any T and stride).
// SW: the stride when known at compile time (1, 2), else 0.
template <typename T, bool kIdx, int SW>
void max_row_portable(const T* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t dw,
                      int64_t sw_rt, int64_t c0, int64_t count, T* y, int64_t* idx,
                      int64_t idx_base) {
  using Code = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  const int64_t sw = SW ? SW : sw_rt;
  if (count < kBlock) {
    for (int64_t l = 0; l < count; ++l) {
      const T* p = xr + c0 + l * sw;
      T best = p[0];
      int64_t code = 0;
      for (int64_t i = 0; i < nrows; ++i)
        for (int64_t j = 0; j < kw; ++j) {
          const T v = p[i * rstep + j * dw];
          const bool take = (v > best) | (v != v);
          best = take ? v : best;
          code = take ? i * rstep + j * dw : code;
        }
      y[l] = best;
      if (kIdx) idx[l] = idx_base + l * sw + code;
    }
    return;
  }
  for (int64_t l0 = 0; l0 < count; l0 += kBlock) {
    if (l0 + kBlock > count) l0 = count - kBlock;  // last block shifted back
    const T* p = xr + c0 + l0 * sw;
    T cur[kBlock];
    Code code[kBlock];
    for (int l = 0; l < kBlock; ++l) {
      cur[l] = p[l * sw];
      code[l] = 0;
    }
    for (int64_t i = 0; i < nrows; ++i)
      for (int64_t j = 0; j < kw; ++j) {
        if (i == 0 && j == 0) continue;
        const int64_t off = i * rstep + j * dw;
        const T* q = p + off;
        const Code c = static_cast<Code>(off);
        for (int l = 0; l < kBlock; ++l) {
          const T v = q[l * sw];
          const bool take = (v > cur[l]) | (v != v);
          cur[l] = take ? v : cur[l];
          code[l] = take ? c : code[l];
        }
      }
    for (int l = 0; l < kBlock; ++l) y[l0 + l] = cur[l];
    if (kIdx)
      for (int l = 0; l < kBlock; ++l) idx[l0 + l] = idx_base + (l0 + l) * sw + code[l];
  }
}

// The ISA's row kernels for T, where it has them and they support the stride (1, or 2 with
// windows at least 2 wide); else null.
template <typename T>
MaxRowFn<T> isa_max_row(const PoolRowKernels* isa, int64_t sw, int64_t kw) {
  if (!isa || !(sw == 1 || (sw == 2 && kw >= 2))) return nullptr;
  if constexpr (std::is_same_v<T, float>) return isa->max_row_f32;
  else return isa->max_row_f64;
}
template <typename T>
AvgRowFn<T> isa_avg_row(const PoolRowKernels* isa, int64_t sw, int64_t kw) {
  if (!isa || !(sw == 1 || (sw == 2 && kw >= 2))) return nullptr;
  if constexpr (std::is_same_v<T, float>) return isa->avg_row_f32;
  else return isa->avg_row_f64;
}

template <typename T>
MaxRowsFn<T> isa_max_rows(const PoolRowKernels* isa) {
  if constexpr (std::is_same_v<T, float>) return isa->max_rows_f32;
  else return isa->max_rows_f64;
}
template <typename T>
AvgRowsFn<T> isa_avg_rows(const PoolRowKernels* isa) {
  if constexpr (std::is_same_v<T, float>) return isa->avg_rows_f32;
  else return isa->avg_rows_f64;
}

template <typename T, bool kIdx>
void max_row_interior(const PoolRowKernels* isa, const T* xr, int64_t nrows, int64_t rstep,
                      int64_t kw, int64_t dw, int64_t sw, int64_t c0, int64_t count,
                      int64_t writable, T* y, int64_t* idx, int64_t idx_base) {
  if (const MaxRowFn<T> row = isa_max_row<T>(isa, sw, kw))
    return row(xr, nrows, rstep, kw, dw, sw, c0, count, writable, y, kIdx ? idx : nullptr,
               idx_base);
  if (sw == 1)
    max_row_portable<T, kIdx, 1>(xr, nrows, rstep, kw, dw, 1, c0, count, y, idx, idx_base);
  else if (sw == 2)
    max_row_portable<T, kIdx, 2>(xr, nrows, rstep, kw, dw, 2, c0, count, y, idx, idx_base);
  else
    max_row_portable<T, kIdx, 0>(xr, nrows, rstep, kw, dw, sw, c0, count, y, idx, idx_base);
}

// Output rows [ho_begin, ho_end) of one plane.
template <typename T, bool kIdx>
void max_pool_rows(const Pool2dShape& s, const PoolRowKernels* isa, const T* x, T* y,
                   int64_t* indices, int64_t ho_begin, int64_t ho_end) {
  const int64_t sw = s.stride_w, pw = s.pad_w, span_w = (s.kw - 1) * s.dil_w;
  // Interior outputs: wo*sw - pw >= 0 and wo*sw - pw + span_w <= W - 1.
  const int64_t wa = std::min(s.Wo, ceil_div(pw, sw));
  const int64_t last = s.W - 1 - span_w + pw;
  const int64_t wb = std::max(wa, last < 0 ? int64_t(0) : std::min(s.Wo, last / sw + 1));
  for (int64_t ho = ho_begin; ho < ho_end; ++ho) {
    const int64_t ih0 = ho * s.stride_h - s.pad_h;
    int64_t i_lo, i_hi;  // window rows inside the image
    inside_range(ih0, s.dil_h, s.H, s.kh, &i_lo, &i_hi);
    T* yrow = y + ho * s.Wo;
    int64_t* irow = kIdx ? indices + ho * s.Wo : nullptr;
    const int64_t nrows = i_hi - i_lo;
    const int64_t rstep = s.dil_h * s.W;
    // int32 window codes (float) must hold the largest offset inside the window.
    const bool fast = nrows > 0 && wb > wa &&
                      (sizeof(T) != 4 || nrows * rstep <= std::numeric_limits<int32_t>::max());
    const int64_t ia = fast ? wa : s.Wo, ib = fast ? wb : s.Wo;
    if (fast) {
      // The interior first: a short row's vector may run on into this row's right edge and
      // the rows after it in [ho_begin, ho_end), all written after it.
      const int64_t first_ih = ih0 + i_lo * s.dil_h;
      const int64_t c0 = wa * sw - pw;
      max_row_interior<T, kIdx>(isa, x + first_ih * s.W, nrows, rstep, s.kw, s.dil_w, sw, c0,
                                wb - wa, (ho_end - ho) * s.Wo - wa, yrow + wa,
                                kIdx ? irow + wa : nullptr, first_ih * s.W + c0);
    }
    for (int64_t wo = 0; wo < ia; ++wo)
      max_one(s, x, ih0, i_lo, i_hi, wo, yrow + wo, kIdx ? irow + wo : nullptr);
    for (int64_t wo = ib; wo < s.Wo; ++wo)
      max_one(s, x, ih0, i_lo, i_hi, wo, yrow + wo, kIdx ? irow + wo : nullptr);
  }
}

// ------------------------------------------------------------------------------------------
// average pooling
// ------------------------------------------------------------------------------------------

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

// Portable interior row kernel (contract of PoolRowKernels::avg_row_*).
template <typename T, int SW>
void avg_row_portable(const T* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t sw_rt,
                      int64_t c0, int64_t count, T divisor, T* y) {
  const int64_t sw = SW ? SW : sw_rt;
  if (count < kBlock) {
    for (int64_t l = 0; l < count; ++l) {
      const T* p = xr + c0 + l * sw;
      T sum = T(0);
      for (int64_t i = 0; i < nrows; ++i)
        for (int64_t j = 0; j < kw; ++j) sum += p[i * rstep + j];
      y[l] = sum / divisor;
    }
    return;
  }
  for (int64_t l0 = 0; l0 < count; l0 += kBlock) {
    if (l0 + kBlock > count) l0 = count - kBlock;
    const T* p = xr + c0 + l0 * sw;
    T sum[kBlock];
    for (int l = 0; l < kBlock; ++l) sum[l] = T(0);
    for (int64_t i = 0; i < nrows; ++i)
      for (int64_t j = 0; j < kw; ++j) {
        const T* q = p + i * rstep + j;
        for (int l = 0; l < kBlock; ++l) sum[l] += q[l * sw];
      }
    for (int l = 0; l < kBlock; ++l) y[l0 + l] = sum[l] / divisor;
  }
}

template <typename T>
void avg_pool_rows(const Pool2dShape& s, const PoolRowKernels* isa, bool count_include_pad,
                   int64_t divisor_override, const T* x, T* y, int64_t ho_begin, int64_t ho_end) {
  const int64_t sw = s.stride_w, pw = s.pad_w, kw = s.kw;
  const int64_t wa = std::min(s.Wo, ceil_div(pw, sw));
  const int64_t last = s.W - kw + pw;  // wo*sw - pw + kw <= W
  const int64_t wb = std::max(wa, last < 0 ? int64_t(0) : std::min(s.Wo, last / sw + 1));
  for (int64_t ho = ho_begin; ho < ho_end; ++ho) {
    const AvgWindow hw = avg_window(ho, s.stride_h, s.pad_h, s.kh, s.H);
    T* yrow = y + ho * s.Wo;
    const bool fast = hw.hi > hw.lo && wb > wa;
    const int64_t ia = fast ? wa : s.Wo, ib = fast ? wb : s.Wo;
    auto border = [&](int64_t wo) {
      const AvgWindow ww = avg_window(wo, sw, pw, kw, s.W);
      const int64_t div = avg_divisor(hw, ww, count_include_pad, divisor_override);
      T sum = T(0);
      for (int64_t ih = hw.lo; ih < hw.hi; ++ih)
        for (int64_t iw = ww.lo; iw < ww.hi; ++iw) sum += x[ih * s.W + iw];
      yrow[wo] = div ? sum / static_cast<T>(div) : T(0);
    };
    for (int64_t wo = 0; wo < ia; ++wo) border(wo);
    for (int64_t wo = ib; wo < s.Wo; ++wo) border(wo);
    if (!fast) continue;
    const int64_t div = avg_divisor(hw, AvgWindow{0, kw, kw}, count_include_pad,
                                    divisor_override);
    const T divisor = static_cast<T>(div);
    const T* xr = x + hw.lo * s.W;
    const int64_t nrows = hw.hi - hw.lo, c0 = wa * sw - pw, count = wb - wa;
    if (const AvgRowFn<T> row = isa_avg_row<T>(isa, sw, kw)) {
      row(xr, nrows, s.W, kw, sw, c0, count, divisor, yrow + wa);
      continue;
    }
    if (sw == 1)
      avg_row_portable<T, 1>(xr, nrows, s.W, kw, 1, c0, count, divisor, yrow + wa);
    else if (sw == 2)
      avg_row_portable<T, 2>(xr, nrows, s.W, kw, 2, c0, count, divisor, yrow + wa);
    else
      avg_row_portable<T, 0>(xr, nrows, s.W, kw, sw, c0, count, divisor, yrow + wa);
  }
}

// Layout of the avg backward scratch of one thread: `slots` scaled dy rows of `gw` elements
// (g_ho[wo] at [left + wo], -0.0 around), then two phase accumulators of `acc` elements.
struct AvgBackwardScratch {
  int64_t left, gw, slots, acc;
  int64_t size() const { return slots * gw + 2 * acc; }
};

AvgBackwardScratch avg_backward_scratch(const Pool2dShape& s, int64_t block_rows) {
  AvgBackwardScratch a;
  a.left = s.kw + 1;
  const int64_t phase_len = ceil_div(s.W, s.stride_w);
  a.gw = a.left + std::max(s.Wo, phase_len + s.pad_w + 2) + 2;
  a.slots = (block_rows + s.kh) / s.stride_h + 2;
  a.acc = phase_len + 1;
  return a;
}

// The divisor of avg pooling as a product hf(ho) * wf[wo] of exact small integers in T (0: empty
// window); `exact` is false when the product might round, then avg_divisor is used per output.
template <typename T>
struct AvgFactors {
  bool exact;
  std::vector<T> wf;
};

template <typename T>
AvgFactors<T> avg_factors(const Pool2dShape& s, bool count_include_pad, int64_t divisor_override) {
  AvgFactors<T> f;
  f.exact = divisor_override > 0 ||
            double(s.kh) * double(s.kw) < double(int64_t(1) << std::numeric_limits<T>::digits);
  f.wf.resize(std::max<int64_t>(s.Wo, 1));
  for (int64_t wo = 0; wo < s.Wo; ++wo) {
    const AvgWindow ww = avg_window(wo, s.stride_w, s.pad_w, s.kw, s.W);
    f.wf[wo] = ww.hi <= ww.lo ? T(0)
               : divisor_override > 0 ? T(1)
               : T(count_include_pad ? ww.padded : ww.hi - ww.lo);
  }
  return f;
}

template <typename T>
T avg_hfactor(const AvgWindow& hw, bool count_include_pad, int64_t divisor_override) {
  if (hw.hi <= hw.lo) return T(0);
  if (divisor_override > 0) return static_cast<T>(divisor_override);
  return T(count_include_pad ? hw.padded : hw.hi - hw.lo);
}

// The output rows whose windows (clipped to the image) contain input row ih: [*lo, *hi).
inline void rows_covering(const Pool2dShape& s, int64_t ih, int64_t* lo, int64_t* hi) {
  const int64_t a = -floor_div(-(ih + s.pad_h - s.kh + 1), s.stride_h);  // ceil
  const int64_t b = floor_div(ih + s.pad_h, s.stride_h) + 1;
  *lo = std::max<int64_t>(a, 0);
  *hi = std::max(*lo, std::min(b, s.Ho));
}

// acc[m] = 0 + sum over the output rows [a, b), taps j descending, of g_ho[m + (r - j + pw)/sw]
// for the taps with (r - j + pw) % sw == 0: phase r of one dx row. SW: the stride when known
// at compile time (1, 2), else 0 (a division by a run-time stride per tap: 64x16x10x10 k2 took
// 0.59 ms on one thread instead of 0.49, before the direct path took that case).
template <typename T, int SW>
inline void avg_backward_phase(const Pool2dShape& s, const AvgBackwardScratch& L, int64_t sw_rt,
                               int64_t r, int64_t m_count, const T* grows, int64_t ho_first,
                               int64_t a, int64_t b, T* acc) {
  const int64_t sw = SW ? SW : sw_rt;
  for (int64_t m = 0; m < m_count; ++m) acc[m] = T(0);
  for (int64_t ho = a; ho < b; ++ho) {
    const T* g = grows + (ho - ho_first) * L.gw + L.left;
    for (int64_t j = s.kw - 1; j >= 0; --j) {
      const int64_t t = r - j + s.pad_w;
      if (t % sw != 0) continue;
      const T* gd = g + t / sw;
      for (int64_t m = 0; m < m_count; ++m) acc[m] += gd[m];
    }
  }
}

// dx rows [r0, r1) of one plane.
template <typename T, int SW>
void avg_backward_rows(const Pool2dShape& s, const AvgBackwardScratch& L, const AvgFactors<T>& f,
                       bool count_include_pad, int64_t divisor_override, const T* dy, T* dx,
                       int64_t r0, int64_t r1, T* scratch) {
  const int64_t sw = SW ? SW : s.stride_w, pw = s.pad_w, kw = s.kw, W = s.W;
  int64_t ho_first, ho_end, unused;
  rows_covering(s, r0, &ho_first, &unused);
  rows_covering(s, r1 - 1, &unused, &ho_end);
  if (ho_end < ho_first) ho_end = ho_first;
  // Scaled dy rows.
  for (int64_t ho = ho_first; ho < ho_end; ++ho) {
    T* g = scratch + (ho - ho_first) * L.gw;
    std::fill(g, g + L.left, T(-0.0));
    std::fill(g + L.left + s.Wo, g + L.gw, T(-0.0));
    g += L.left;
    const AvgWindow hw = avg_window(ho, s.stride_h, s.pad_h, s.kh, s.H);
    const T* dyrow = dy + ho * s.Wo;
    if (f.exact) {
      const T hf = avg_hfactor<T>(hw, count_include_pad, divisor_override);
      const T* wf = f.wf.data();
      for (int64_t wo = 0; wo < s.Wo; ++wo) {
        const T d = hf * wf[wo];
        g[wo] = d != T(0) ? dyrow[wo] / d : T(0);
      }
    } else {
      for (int64_t wo = 0; wo < s.Wo; ++wo) {
        const AvgWindow ww = avg_window(wo, sw, pw, kw, W);
        const int64_t div = avg_divisor(hw, ww, count_include_pad, divisor_override);
        g[wo] = div ? dyrow[wo] / static_cast<T>(div) : T(0);
      }
    }
  }
  T* acc0 = scratch + L.slots * L.gw;
  T* acc1 = acc0 + L.acc;
  for (int64_t ih = r0; ih < r1; ++ih) {
    T* dxrow = dx + ih * W;
    int64_t a, b;
    rows_covering(s, ih, &a, &b);
    if (a >= b) {
      std::fill(dxrow, dxrow + W, T(0));
    } else if (sw == 1) {
      avg_backward_phase<T, 1>(s, L, 1, 0, W, scratch, ho_first, a, b, dxrow);
    } else if (sw == 2) {
      const int64_t m0 = (W + 1) / 2, m1 = W / 2;
      avg_backward_phase<T, 2>(s, L, 2, 0, m0, scratch, ho_first, a, b, acc0);
      avg_backward_phase<T, 2>(s, L, 2, 1, m1, scratch, ho_first, a, b, acc1);
      for (int64_t m = 0; m < m1; ++m) {
        dxrow[2 * m] = acc0[m];
        dxrow[2 * m + 1] = acc1[m];
      }
      if (m0 > m1) dxrow[W - 1] = acc0[m1];
    } else {
      for (int64_t r = 0; r < sw && r < W; ++r) {
        const int64_t m_count = ceil_div(W - r, sw);
        avg_backward_phase<T, 0>(s, L, sw, r, m_count, scratch, ho_first, a, b, acc0);
        for (int64_t m = 0; m < m_count; ++m) dxrow[m * sw + r] = acc0[m];
      }
    }
  }
}

// dxrow[wo*kw + j] = g[wo] for wo < n, j < kw: one row under n side-by-side windows.
template <typename T>
inline void spread_row(const T* g, int64_t n, int64_t kw, T* dxrow) {
  if (kw == 2) {
    for (int64_t wo = 0; wo < n; ++wo) {
      dxrow[2 * wo] = g[wo];
      dxrow[2 * wo + 1] = g[wo];
    }
  } else {
    for (int64_t wo = 0; wo < n; ++wo)
      for (int64_t j = 0; j < kw; ++j) dxrow[wo * kw + j] = g[wo];
  }
}

// The kh rows of dx (row length W) under one row of Wo side-by-side windows kh x kw that all
// hold `divisor` inputs: 0 + dy / divisor under each window (g: Wo values of scratch), 0 past
// the last window.
template <typename T>
void avg_backward_window_rows(int64_t kh, int64_t kw, int64_t Wo, int64_t W, const T* dyrow,
                              T divisor, T* g, T* dx) {
  for (int64_t wo = 0; wo < Wo; ++wo) g[wo] = T(0) + dyrow[wo] / divisor;
  if (kh == 2 && kw == 2) {  // LeNet's pools: both rows at once
    T* dx1 = dx + W;
    for (int64_t wo = 0; wo < Wo; ++wo) {
      dx[2 * wo] = dx[2 * wo + 1] = g[wo];
      dx1[2 * wo] = dx1[2 * wo + 1] = g[wo];
    }
    std::fill(dx + Wo * kw, dx + W, T(0));
    std::fill(dx1 + Wo * kw, dx1 + W, T(0));
    return;
  }
  spread_row(g, Wo, kw, dx);
  std::fill(dx + Wo * kw, dx + W, T(0));
  for (int64_t i = 1; i < kh; ++i) copy_run(dx, W, dx + i * W);
}

// dx rows [r0, r1) of one plane when the windows lie side by side (k == stride, no padding):
// each dy row is scaled once into g (divisions by exact small integers: PyTorch's dy / divisor
// bits), then copied kw times along each of its kh dx rows; columns no window covers are 0.
// The loops are plain so that GCC vectorises them (one division per output, not per input:
// with a scalar division per dx element, 32x32x32x32 k2 ran at 4.5 GB/s).
template <typename T>
void avg_backward_disjoint_rows(const Pool2dShape& s, const AvgFactors<T>& f,
                                bool count_include_pad, int64_t divisor_override, const T* dy,
                                T* dx, int64_t r0, int64_t r1, T* g) {
  const int64_t kh = s.kh, kw = s.kw, W = s.W;
  const int64_t covered_outputs = std::min(s.Wo, W / kw);
  const int64_t covered = std::min(W, s.Wo * kw);  // the last window may be clipped (ceil)
  for (int64_t ho = r0 / kh; ho * kh < r1; ++ho) {
    const int64_t ih_begin = std::max(r0, ho * kh), ih_end = std::min(r1, (ho + 1) * kh);
    if (ho >= s.Ho) {
      std::fill(dx + ih_begin * W, dx + ih_end * W, T(0));
      continue;
    }
    const T hf = avg_hfactor<T>(avg_window(ho, s.stride_h, 0, kh, s.H), count_include_pad,
                                divisor_override);
    const T* dyrow = dy + ho * s.Wo;
    const T* wf = f.wf.data();
    // No window is empty here: each starts inside the image (the output size rule).
    for (int64_t wo = 0; wo < s.Wo; ++wo) g[wo] = T(0) + dyrow[wo] / (hf * wf[wo]);
    for (int64_t ih = ih_begin; ih < ih_end; ++ih) {
      T* dxrow = dx + ih * W;
      spread_row(g, covered_outputs, kw, dxrow);
      for (int64_t iw = covered_outputs * kw; iw < covered; ++iw) dxrow[iw] = g[iw / kw];
      std::fill(dxrow + covered, dxrow + W, T(0));
    }
  }
}

// ------------------------------------------------------------------------------------------
// max pooling backward
// ------------------------------------------------------------------------------------------

// acc = 0, then acc[idx[o]] += dy[o] in output order; false if an index is outside [0, HW).
template <typename T>
bool max_backward_scatter(int64_t HW, int64_t P, const T* dy, const int64_t* idx, T* acc) {
  std::fill(acc, acc + HW, T(0));
  for (int64_t o = 0; o < P; ++o) {
    const int64_t i = idx[o];
    if (!inside(i, HW)) return false;
    acc[i] += dy[o];
  }
  return true;
}

// Indices that each lie in their own 2x2 block (output (ho, wo) in rows 2ho..2ho+1, columns
// 2wo..2wo+1: what a 2x2 stride-2 pool with no padding gives): the ISA's kernel writes every
// element of the blocks once, dy where its block's index points and 0 elsewhere, then the
// rows and columns no block covers are zeroed; no zero fill first. The backward call is not
// told the pool's geometry, so this is a property of the indices, checked as it goes: false
// (dx unspecified) after the first row of blocks holding an index outside its block (the
// caller scatters), which costs other geometries one row. Used for rows of >= 8 outputs
// (A/B against the scatter, AVX2 on Zen 3: 32x32 planes 1.67-2.2x, LeNet's 28x28 1.4-1.6x;
// rows of 5, its 10x10 planes, 0.5x); portable code for it measured 0.45-0.77x of the scatter
// (branch-free scalar), so an ISA without the kernel always scatters.
template <typename T>
bool max_backward_disjoint_2x2(MaxBackward2x2Fn<T> blocks, int64_t H, int64_t W, int64_t Ho,
                               int64_t Wo, const T* dy, const int64_t* idx, T* dx) {
  if (!blocks(idx, dy, Ho, Wo, W, dx)) return false;
  if (2 * Wo < W)  // the columns no block covers
    for (int64_t r = 0; r < 2 * Ho; ++r) std::fill(dx + r * W + 2 * Wo, dx + (r + 1) * W, T(0));
  std::fill(dx + 2 * Ho * W, dx + H * W, T(0));
  return true;
}

// Windows that tile the planes' rows (no padding, H = Ho*sh, every window inside the image),
// with a rows kernel for their stride: the N*C planes are one stack of N*C*Ho output rows,
// stack row h reading from input row h*sh on, dense in y, and each task runs the rows kernel
// over its block of the stack in one call (the per-row work of max_pool_rows and the row
// kernel's masks were most of the time of LeNet's pools, 5 and 14 outputs a row: bench/ab.py
// --flush, both orders, 2 threads: 64x16x10x10 max 1.8-2.2x, avg 2.0-2.4x; 64x6x28x28
// 1.1-1.3x; float64 1.1-1.35x). rows_stack: the geometry alone (the avg backward's stacked
// loop is portable); stacked_rows: with the ISA's rows kernels for it.
bool rows_stack(const Pool2dShape& s) {
  return s.pad_h == 0 && s.pad_w == 0 && s.Ho > 0 && s.Wo > 0 && s.H == s.Ho * s.stride_h &&
         (s.Ho - 1) * s.stride_h + (s.kh - 1) * s.dil_h < s.H &&
         (s.Wo - 1) * s.stride_w + (s.kw - 1) * s.dil_w < s.W;
}
bool stacked_rows(const Pool2dShape& s, const PoolRowKernels* isa) {
  return isa && rows_stack(s) && (s.stride_w == 1 || (s.stride_w == 2 && s.kw >= 2)) &&
         s.kh * s.dil_h * s.W <= std::numeric_limits<int32_t>::max();  // int32 window codes
}

// Tasks over a stack of `rows` rows: blocks of whole rows, about 4 a thread.
template <typename Body>
void for_stack_blocks(int64_t rows, int nthreads, const Body& body) {
  const int64_t block = std::max<int64_t>(1, ceil_div(rows, 4 * int64_t(nthreads)));
  parallel_for(ceil_div(rows, block), nthreads, [&](int64_t task, int thread) {
    const int64_t h0 = task * block;
    body(h0, std::min(rows, h0 + block) - h0, thread);
  });
}

}  // namespace

template <typename T>
void max_pool2d_forward(const Pool2dShape& s, const T* x, T* y, int64_t* indices) {
  const int64_t HW = s.H * s.W, P = s.Ho * s.Wo;
  const PoolRowKernels* isa = active_pool_kernels();
  const int nthreads = pool_threads(s, double(s.kh) * s.kw, s.Ho);
  if (stacked_rows(s, isa)) {
    const MaxRowsFn<T> rows_kernel = isa_max_rows<T>(isa);
    const int64_t x_step = s.stride_h * s.W, x_size = s.N * s.C * HW;
    for_stack_blocks(s.N * s.C * s.Ho, nthreads, [&](int64_t h0, int64_t rows, int) {
      rows_kernel(x + h0 * x_step, rows, x_step, s.Ho, h0 % s.Ho, s.kh, s.dil_h * s.W, s.kw,
                  s.dil_w, s.stride_w, s.Wo, x_size - h0 * x_step, y + h0 * s.Wo,
                  indices ? indices + h0 * s.Wo : nullptr);
    });
    return;
  }
  for_row_blocks(s.N * s.C, s.Ho, nthreads, [&](int64_t plane, int64_t h0, int64_t h1, int) {
    if (indices)
      max_pool_rows<T, true>(s, isa, x + plane * HW, y + plane * P, indices + plane * P, h0,
                             h1);
    else
      max_pool_rows<T, false>(s, isa, x + plane * HW, y + plane * P, nullptr, h0, h1);
  });
}

// dst[0, n) = src[0, n), stored past the caches (non-temporal) from dst's first 16-byte
// boundary on; the caller fences.
template <typename T>
void stream_run(const T* src, int64_t n, T* dst) {
#if defined(__SSE2__)
  constexpr int64_t L = 16 / sizeof(T);
  int64_t i = 0;
  for (; i < n && reinterpret_cast<uintptr_t>(dst + i) % 16 != 0; ++i) dst[i] = src[i];
  for (; i + L <= n; i += L) {
    if constexpr (sizeof(T) == 4)
      _mm_stream_ps(reinterpret_cast<float*>(dst + i),
                    _mm_loadu_ps(reinterpret_cast<const float*>(src + i)));
    else
      _mm_stream_pd(reinterpret_cast<double*>(dst + i),
                    _mm_loadu_pd(reinterpret_cast<const double*>(src + i)));
  }
  for (; i < n; ++i) dst[i] = src[i];
#else
  std::copy(src, src + n, dst);
#endif
}

template <typename T>
bool max_pool2d_backward(const Pool2dShape& s, const T* dy, const int64_t* indices, T* dx) {
  const int64_t HW = s.H * s.W, P = s.Ho * s.Wo;
  std::atomic<bool> ok{true};
  const PoolRowKernels* isa = active_pool_kernels();
  MaxBackward2x2Fn<T> blocks = nullptr;
  if (isa && 2 * s.Ho <= s.H && 2 * s.Wo <= s.W && s.Wo >= 8) {
    if constexpr (std::is_same_v<T, float>)
      blocks = isa->max_backward_2x2_f32;
    else
      blocks = isa->max_backward_2x2_f64;
  }
  const int nthreads = pool_threads(s, 2.0, 1);
  if constexpr (std::is_same_v<T, float>) {
    const MaxBackward2x2StackFn stack =
        isa && s.H == 2 * s.Ho && s.W == 2 * s.Wo && s.Wo < 8 && s.Ho > 0 && s.Wo > 0
            ? isa->max_backward_2x2_stack_f32
            : nullptr;
    // Planes that the blocks tile, rows of under 8 outputs: one stack of all planes' rows,
    // each task's block of it in one call (LeNet's second pool, 10x10 planes, A/B against
    // the scatter: 1.04-1.09x at 2 threads, 1.22x at 1, 1.03-1.2x with the caches flushed);
    // else, after an index outside its block, the scatter below rewrites every plane.
    if (stack) {
      std::atomic<bool> blocks_ok{true};
      for_stack_blocks(s.N * s.C * s.Ho, nthreads, [&](int64_t h0, int64_t rows, int) {
        if (blocks_ok.load(std::memory_order_relaxed) &&
            !stack(indices + h0 * s.Wo, dy + h0 * s.Wo, rows, h0, s.Ho, s.Wo,
                   dx + h0 * 4 * s.Wo))
          blocks_ok.store(false, std::memory_order_relaxed);
      });
      if (blocks_ok.load()) return true;
    }
  }
  const int64_t dx_bytes = s.N * s.C * HW * static_cast<int64_t>(sizeof(T));
  // Streamed where dx would not stay in the L3 anyway, through planes that fit the L2.
  const bool stream =
      dx_bytes >= (16 << 20) && HW * static_cast<int64_t>(sizeof(T)) <= (256 << 10);
  T* planes = stream ? thread_scratch<T>(kScratchColumns, nthreads * HW) : nullptr;
  std::atomic<bool> try_blocks{blocks != nullptr};  // off after a plane fails (other pools)
  parallel_for_runs(s.N * s.C, nthreads, [&](int64_t plane, int thread) {
    const T* d = dy + plane * P;
    const int64_t* i = indices + plane * P;
    if (try_blocks.load(std::memory_order_relaxed)) {
      if (max_backward_disjoint_2x2(blocks, s.H, s.W, s.Ho, s.Wo, d, i, dx + plane * HW)) return;
      try_blocks.store(false, std::memory_order_relaxed);
    }
    T* acc = stream ? planes + thread * HW : dx + plane * HW;
    if (!max_backward_scatter(HW, P, d, i, acc)) ok.store(false, std::memory_order_relaxed);
    if (stream) {
      stream_run(acc, HW, dx + plane * HW);
#if defined(__SSE2__)
      _mm_sfence();  // the streamed stores are weakly ordered: done before the task ends
#endif
    }
  });
  return ok.load();
}

template <typename T>
void avg_pool2d_forward(const Pool2dShape& s, bool count_include_pad, int64_t divisor_override,
                        const T* x, T* y) {
  const int64_t HW = s.H * s.W, P = s.Ho * s.Wo;
  const PoolRowKernels* isa = active_pool_kernels();
  const int nthreads = pool_threads(s, double(s.kh) * s.kw, s.Ho);
  if (stacked_rows(s, isa) && s.dil_h == 1 && s.dil_w == 1) {
    // Every window whole and inside: one divisor.
    const T divisor = static_cast<T>(avg_divisor(AvgWindow{0, s.kh, s.kh}, AvgWindow{0, s.kw, s.kw},
                                                 count_include_pad, divisor_override));
    const AvgRowsFn<T> rows_kernel = isa_avg_rows<T>(isa);
    const int64_t x_step = s.stride_h * s.W, x_size = s.N * s.C * HW;
    for_stack_blocks(s.N * s.C * s.Ho, nthreads, [&](int64_t h0, int64_t rows, int) {
      rows_kernel(x + h0 * x_step, rows, x_step, s.kh, s.W, s.kw, s.stride_w, s.Wo,
                  x_size - h0 * x_step, divisor, y + h0 * s.Wo);
    });
    return;
  }
  for_row_blocks(s.N * s.C, s.Ho, nthreads, [&](int64_t plane, int64_t h0, int64_t h1, int) {
    avg_pool_rows(s, isa, count_include_pad, divisor_override, x + plane * HW, y + plane * P,
                  h0, h1);
  });
}

template <typename T>
void avg_pool2d_backward(const Pool2dShape& s, bool count_include_pad, int64_t divisor_override,
                         const T* dy, T* dx) {
  const int64_t HW = s.H * s.W, P = s.Ho * s.Wo, planes = s.N * s.C;
  if (planes == 0 || HW == 0) return;
  const int nthreads = pool_threads(s, double(s.kh) * s.kw, s.H);
  const int64_t blocks = row_blocks(planes, s.H, nthreads);
  const AvgFactors<T> f = avg_factors<T>(s, count_include_pad, divisor_override);
  const int64_t line = 64 / static_cast<int64_t>(sizeof(T));  // values per cache line
  if (f.exact && s.kh == s.stride_h && s.kw == s.stride_w && s.pad_h == 0 && s.pad_w == 0) {
    // Windows side by side (k == stride, no padding): every dx element lies in at most one
    // window, so it is 0 + that window's scaled dy, written once (the gather below costs
    // several times more per element on small planes).
    // One scaled row per thread, on cache lines of its own (sharing a line, two threads took
    // longer than one on 10x10 planes; so does the gather's scratch below).
    const int64_t row_stride = round_up(s.Wo, line);
    AlignedBuffer<T> rows(nthreads * row_stride);
    if (rows_stack(s) && s.Wo * s.kw <= s.W) {
      // Windows that tile the planes' rows: the stack of all planes' output rows, each task a
      // block of it, in one loop (per plane and row, avg_backward_disjoint_rows's work was
      // most of the time of LeNet's second pool, 5 outputs a row).
      const T divisor = static_cast<T>(avg_divisor(AvgWindow{0, s.kh, s.kh},
                                                   AvgWindow{0, s.kw, s.kw}, count_include_pad,
                                                   divisor_override));
      const int64_t rows_all = planes * s.Ho;
      return for_stack_blocks(rows_all, nthreads, [&](int64_t h0, int64_t count, int thread) {
        T* g = rows.data() + thread * row_stride;
        for (int64_t h = h0; h < h0 + count; ++h)
          avg_backward_window_rows(s.kh, s.kw, s.Wo, s.W, dy + h * s.Wo, divisor, g,
                                   dx + h * s.kh * s.W);
      });
    }
    return for_row_blocks(planes, s.H, nthreads, [&](int64_t plane, int64_t r0, int64_t r1,
                                                     int thread) {
      avg_backward_disjoint_rows(s, f, count_include_pad, divisor_override, dy + plane * P,
                                 dx + plane * HW, r0, r1, rows.data() + thread * row_stride);
    });
  }
  const AvgBackwardScratch L = avg_backward_scratch(s, ceil_div(s.H, blocks));
  const int64_t scratch_stride = round_up(L.size(), line);
  AlignedBuffer<T> scratch(nthreads * scratch_stride);
  for_row_blocks(planes, s.H, nthreads, [&](int64_t plane, int64_t r0, int64_t r1, int thread) {
    T* sp = scratch.data() + thread * scratch_stride;
    const T* dyp = dy + plane * P;
    T* dxp = dx + plane * HW;
    if (s.stride_w == 1)
      avg_backward_rows<T, 1>(s, L, f, count_include_pad, divisor_override, dyp, dxp, r0, r1, sp);
    else if (s.stride_w == 2)
      avg_backward_rows<T, 2>(s, L, f, count_include_pad, divisor_override, dyp, dxp, r0, r1, sp);
    else
      avg_backward_rows<T, 0>(s, L, f, count_include_pad, divisor_override, dyp, dxp, r0, r1, sp);
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
