// conv2d forward, input gradient and weight gradient as packed GEMMs over an implicit im2col
// matrix: the packing routines read the image directly, so no full column matrix is built.
// Ungrouped layers go other ways where those are faster: strided, dilated or narrow forward
// passes and most weight gradients over a channels-last copy of x (forward_channels_last,
// weight_grad_channels_last); stride-2 forward passes with few channels in place from x's
// column-phase planes (forward_parity_planes); 1x1 forward passes and input gradients on a
// packed GEMM with W (W^T) packed once (pointwise_gemm); the weight gradients of few-channel
// layers with long output rows and of 1x1 layers transposed, dW^T = col * dy^T
// (weight_grad_phase_planes, weight_grad_pointwise); few-channel stride-1 layers' three passes
// as direct loops over zero-padded planes (forward_plane_taps, also for the input gradient as
// the flipped layer's forward pass; weight_grad_plane_dots); strided few-channel layers' input
// gradients as one such loop per stride phase of dx (input_grad_phase_taps).
//
// For one image n and one group g (Cg = C/groups, Kg = K/groups, CRS = Cg*R*S, P = Ho*Wo):
//   col[q][p], q = (c*R + r)*S + s, p = ho*Wo + wo:  x[c, ho*sh - ph + r*dh, wo*sw - pw + s*dw]
//   forward      y_g  (Kg x P)   = W_g (Kg x CRS) * col (CRS x P)        parallel over (n, g, P blocks);
//                col is never packed where a panel row is a run of the image: the micro-kernel
//                reads such rows in place through a row-pointer table (indirect GEMM)
//   input grad   dcol (CRS x P)  = W_g^T (CRS x Kg) * dy_g (Kg x P)      parallel over (n, g, P blocks),
//                dx = col2im(dcol)                                       then over (n, c) planes
//   weight grad  dW_g (Kg x CRS) = sum_n dy_g (Kg x P) * col^T (P x CRS) parallel over (g, slices of
//                the n*P reduction); per-slice partial sums added in a fixed order (no atomics).
// One input channel per group (depthwise) goes to the direct kernels of depthwise.cpp instead,
// and 3x3 stride-1 layers with enough channels to the Winograd path of winograd.cpp (all three
// passes).
#include "conv.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "channels_last.h"
#include "common.h"
#include "depthwise.h"
#include "dispatch.h"
#include "gemm.h"
#include "threading.h"
#include "winograd.h"

namespace fastconv {
namespace {

// Below this many flops per thread, starting another thread costs more than it saves.
constexpr double kMinFlopsPerThread = 2e5;
// Bound on the input gradient's column scratch (several images are processed per pass).
constexpr int64_t kColumnScratchBytes = 4 << 20;
// Column gradients of at most this size (all threads' together at most the second) are
// computed and scattered image by image, per thread, larger ones in bands of output rows.
constexpr int64_t kImageColumnBytes = 4 << 20, kImageColumnsTotalBytes = 32 << 20;

struct Im2col {
  int64_t H, W, Ho, Wo, R, S, sh, sw, ph, pw, dh, dw;
  explicit Im2col(const Conv2dShape& s)
      : H(s.H), W(s.W), Ho(s.Ho), Wo(s.Wo), R(s.R), S(s.S), sh(s.stride_h), sw(s.stride_w),
        ph(s.pad_h), pw(s.pad_w), dh(s.dil_h), dw(s.dil_w) {}
};

constexpr int kMaxNR = 32;

// 1x1, stride 1, no padding: col is the image itself (col[c][p] = x[c][p]).
inline bool column_matrix_is_input(const Conv2dShape& s) {
  return s.R == 1 && s.S == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 &&
         s.pad_w == 0;
}

// Whether most forward B panels (nr consecutive output positions, starting at multiples of nr)
// cross from one output row into the next, over one period of their starts modulo Wo.
inline bool most_panels_span_rows(int64_t Wo, int nr) {
  if (Wo < nr) return true;
  int64_t within = 0, panels = 0;
  for (int64_t p0 = 0; panels == 0 || p0 % Wo != 0; p0 += nr) {
    ++panels;
    if (p0 % Wo + nr <= Wo) ++within;
  }
  return 2 * within < panels;
}

// The forward pass reads NCHW panel rows in place only for stride 1, undilated, and output
// rows where most panels stay within a row (1x1 unpadded layers read spanning panels in place
// too); elsewhere most rows would be gathered, and the channels-last path is faster
// (measured: lenet_c2 2.8x, and 1.6-1.8x in float64, where 2 of its 5 panels of 8 stay in a
// row of 10; rows of 20 with panels of 16, 1.35-1.47x; resnet_down, stem7x7 and dilated
// 1.2-1.3x), provided a segment has enough channels to fill the micro-kernel's reduction and
// there are enough output channels to fill half its width (lenet_c2's input gradient, 6 of
// 16, is 1.8x slower there). narrow_rows_only: count as gathered only rows narrower than a
// panel (the input gradient's test: there the alternative is the GEMM and col2im, which beat
// the channels-last path on rows of 20, 0.73x).
inline bool forward_panels_gathered(const Conv2dShape& s, int nr, bool narrow_rows_only = false) {
  const bool flat = s.S == 1 && s.pad_w == 0 && s.W == s.Wo;
  const bool spanning = narrow_rows_only ? s.Wo < nr : !flat && most_panels_span_rows(s.Wo, nr);
  return s.stride_h > 1 || s.stride_w > 1 || s.dil_h > 1 || s.dil_w > 1 || spanning;
}

// The next narrower ISA's micro-kernel where its panels stay within the output rows and
// uk's do not (stride 1, undilated: the panels read in place).
template <typename T>
MicroKernel<T> in_place_fitted_microkernel(const MicroKernel<T>& uk, const Conv2dShape& s) {
  const bool fits = uk.half != nullptr && s.stride_w == 1 && s.dil_w == 1 &&
                    most_panels_span_rows(s.Wo, uk.nr) && !most_panels_span_rows(s.Wo, uk.half->nr);
  return fits ? *uk.half : uk;
}

inline bool forward_channels_last_preferred(const Conv2dShape& s, int nr,
                                            bool narrow_rows_only = false) {
  const int64_t width = s.dil_w == 1 ? s.S * s.C : s.C;
  return s.groups == 1 && width >= 16 && 2 * s.K >= nr &&
         forward_panels_gathered(s, nr, narrow_rows_only);
}

// Row pointers of one forward B panel: col(q0:q0+kc, p0:p0+cols). Where a panel row is one
// contiguous in-bounds run of an input row (stride 1, the panel inside one output row), its
// pointer points into the image; every other row is packed into panel + k*nr (zero padded)
// and points there. Interior panels are then read in place, without a copy.
template <typename T>
void im2col_row_pointers(const Im2col& g, const T* x, int64_t q0, int64_t kc, int64_t p0,
                         int64_t cols, int nr, T* panel, const T** rows) {
  int64_t ih0[kMaxNR], iw0[kMaxNR];
  int64_t ho = p0 / g.Wo, wo = p0 % g.Wo;
  for (int64_t j = 0; j < cols; ++j) {
    ih0[j] = ho * g.sh - g.ph;
    iw0[j] = wo * g.sw - g.pw;
    if (++wo == g.Wo) wo = 0, ++ho;
  }
  const bool one_row = g.sw == 1 && cols == nr && ih0[0] == ih0[nr - 1];
  // Input rows exactly as wide as the output rows (1x1 layers, say) at stride 1: a panel that
  // spans output rows is still one run of the plane for the taps that do not shift it
  // sideways (s*dw == pw), where every row it spans lies inside the image.
  const bool flat = !one_row && g.sw == 1 && g.sh == 1 && cols == nr && g.W == g.Wo;
  int64_t c = q0 / (g.R * g.S), r = (q0 / g.S) % g.R, s = q0 % g.S;
  for (int64_t k = 0; k < kc; ++k) {
    const T* plane = x + c * g.H * g.W;
    const int64_t roff = r * g.dh, soff = s * g.dw;
    const int64_t ih = ih0[0] + roff, iw_first = iw0[0] + soff;
    if (one_row && inside(ih, g.H) && iw_first >= 0 && iw_first + nr - 1 < g.W) {
      rows[k] = plane + ih * g.W + iw_first;
    } else if (flat && soff == g.pw && inside(ih, g.H) && inside(ih0[nr - 1] + roff, g.H)) {
      rows[k] = plane + ih * g.W + iw_first;  // iw_first = first output column here
    } else {
      T* d = panel + k * nr;
      int64_t j = 0;
      for (; j < cols; ++j) {
        const int64_t ihj = ih0[j] + roff, iwj = iw0[j] + soff;
        d[j] = inside(ihj, g.H) && inside(iwj, g.W) ? plane[ihj * g.W + iwj] : T(0);
      }
      for (; j < nr; ++j) d[j] = T(0);
      rows[k] = d;
    }
    if (++s == g.S) {
      s = 0;
      if (++r == g.R) r = 0, ++c;
    }
  }
}

// Row q of col over output positions [p0, p0+kc) into out: the positions of one output row
// are a strided run of one input row, copied in one go when it lies inside the image.
template <typename T>
void im2col_row(const Im2col& g, const T* x, int64_t q, int64_t p0, int64_t kc, T* out) {
  const T* plane = x + (q / (g.R * g.S)) * g.H * g.W;
  const int64_t roff = ((q / g.S) % g.R) * g.dh - g.ph, soff = (q % g.S) * g.dw - g.pw;
  for (int64_t k = 0, p = p0; k < kc;) {
    const int64_t ho = p / g.Wo, wo = p % g.Wo, len = std::min(kc - k, g.Wo - wo);
    const int64_t ih = ho * g.sh + roff, iw_first = wo * g.sw + soff;
    T* d = out + k;
    if (!inside(ih, g.H)) {
      std::fill(d, d + len, T(0));
    } else {
      const T* row = plane + ih * g.W;
      if (iw_first >= 0 && iw_first + (len - 1) * g.sw < g.W) {
        for (int64_t j = 0; j < len; ++j) d[j] = row[iw_first + j * g.sw];
      } else {
        for (int64_t j = 0; j < len; ++j) {
          const int64_t iw = iw_first + j * g.sw;
          d[j] = inside(iw, g.W) ? row[iw] : T(0);
        }
      }
    }
    k += len;
    p += len;
  }
}

// B of the weight gradient: col^T(p0:p0+kc, q0:q0+nc) of one image-group `x`. Each panel's nr
// rows of col are gathered along the input rows (im2col_row, sequential reads) into `rows`
// (nr * kc scratch), then transposed into the panel.
template <typename T>
void pack_im2col_transposed(const Im2col& g, const T* x, int64_t p0, int64_t kc, int64_t q0,
                            int64_t nc, int nr, T* rows, T* dst) {
  for (int64_t jp = 0; jp < nc; jp += nr) {
    T* panel = dst + jp * kc;
    const int64_t cols = std::min<int64_t>(nr, nc - jp);
    for (int64_t j = 0; j < cols; ++j) im2col_row(g, x, q0 + jp + j, p0, kc, rows + j * kc);
    for (int64_t k = 0; k < kc; ++k) {
      T* d = panel + k * nr;
      int64_t j = 0;
      for (; j < cols; ++j) d[j] = rows[j * kc + k];
      for (; j < nr; ++j) d[j] = T(0);
    }
  }
}

// col2im_plane's scatter-add for stride 2, undilated: taps s and s + 1 fill the even and odd
// columns of the same run, added as interleaved pairs where both meet the image (a loop the
// compiler vectorises, where one tap alone stores every other value: A/B both orders, the
// stem's input gradient 1.15-1.17x at 2 threads, stride-2 layers 1.11-1.16x at 1 thread).
// Not inlined and chosen at the call sites: inside col2im_plane, these loops made its own
// slower on short rows (LeNet's second layer 0.8x).
template <typename T>
__attribute__((noinline)) void col2im_plane_pairs(const Im2col& g, const T* col, T init,
                                                  T* plane, bool accumulate) {
  if (!accumulate) std::fill(plane, plane + g.H * g.W, init);
  const int64_t P = g.Ho * g.Wo;
  for (int64_t r = 0; r < g.R; ++r) {
    for (int64_t s = 0; s < g.S; s += 2) {
      const bool paired = s + 1 < g.S;
      const int64_t off_w = s - g.pw;
      // Tap s + 1 reads one column to the right, so its outputs start and end no later than
      // tap s's: lo1 <= lo0, hi1 <= hi0. Both meet [lo0, mid); s alone [mid, hi0), s + 1 alone
      // [lo1, min(lo0, hi1)).
      int64_t lo0, hi0, lo1 = 0, hi1 = 0;
      inside_range(off_w, 2, g.W, g.Wo, &lo0, &hi0);
      if (paired) inside_range(off_w + 1, 2, g.W, g.Wo, &lo1, &hi1);
      const int64_t mid = paired ? std::max(lo0, hi1) : lo0;
      const T* row = col + (r * g.S + s) * P;
      for (int64_t ho = 0; ho < g.Ho; ++ho) {
        const int64_t ih = ho * g.sh - g.ph + r * g.dh;
        if (!inside(ih, g.H)) continue;
        T* drow = plane + ih * g.W;
        const T* c0 = row + ho * g.Wo;
        const T* c1 = c0 + P;  // tap s + 1 (read only where paired)
        T* d = drow + 2 * lo0 + off_w;
        for (int64_t i = 0; i < mid - lo0; ++i) {
          d[2 * i] += c0[lo0 + i];
          d[2 * i + 1] += c1[lo0 + i];
        }
        for (int64_t wo = mid; wo < hi0; ++wo) drow[2 * wo + off_w] += c0[wo];
        for (int64_t wo = lo1; wo < std::min(lo0, hi1); ++wo) drow[2 * wo + off_w + 1] += c1[wo];
      }
    }
  }
}

// dx plane of one channel = init (or, accumulating, its values) + scatter-add of its R*S rows
// of the column gradient. Inlined where it is used: called, it ran the stem's input gradient
// 1.1-1.2x slower.
template <typename T>
__attribute__((always_inline)) inline void col2im_plane(const Im2col& g, const T* col, T init,
                                                        T* plane, bool accumulate) {
  if (!accumulate) std::fill(plane, plane + g.H * g.W, init);
  const int64_t P = g.Ho * g.Wo;
  for (int64_t r = 0; r < g.R; ++r) {
    for (int64_t s = 0; s < g.S; ++s) {
      const T* row = col + (r * g.S + s) * P;
      const int64_t off_w = s * g.dw - g.pw;
      int64_t wo_lo, wo_hi;
      inside_range(off_w, g.sw, g.W, g.Wo, &wo_lo, &wo_hi);
      for (int64_t ho = 0; ho < g.Ho; ++ho) {
        const int64_t ih = ho * g.sh - g.ph + r * g.dh;
        if (!inside(ih, g.H)) continue;
        T* drow = plane + ih * g.W;
        const T* crow = row + ho * g.Wo;
        for (int64_t wo = wo_lo; wo < wo_hi; ++wo) drow[wo * g.sw + off_w] += crow[wo];
      }
    }
  }
}

// Packs each group's weights as the GEMM's A (M x K, A_g[i][k] = w[g*M*K + i*rs + k*cs]), once
// per call for all images, into scratch; *group_size = elements of one group's packed A.
template <typename T>
const T* pack_group_weights(const T* w, int64_t G, int64_t M, int64_t K, int64_t rs, int64_t cs,
                            const GemmBlocking& blk, int mr, int64_t* group_size) {
  const int64_t size = packed_a_full_size<T>(M, K, mr);
  T* packed = thread_scratch<T>(kScratchPackedA, G * size);
  for (int64_t g = 0; g < G; ++g)
    pack_a_full(w + g * M * K, rs, cs, M, K, blk.kc, mr, packed + g * size);
  *group_size = size;
  return packed;
}

// The input rows and columns (padded coordinates) a layer's windows read, and how the window
// splits into segments whose values lie contiguous in a channels-last copy of that region:
// undilated width (dw == 1): one segment per window row, j = s*C + c; else one per (r, s), j = c.
struct WindowLayout {
  int64_t Hp, Wp;
  bool wide;
  int64_t segments, width;
  explicit WindowLayout(const Conv2dShape& s)
      : Hp((s.Ho - 1) * s.stride_h + (s.R - 1) * s.dil_h + 1),
        Wp((s.Wo - 1) * s.stride_w + (s.S - 1) * s.dil_w + 1),
        wide(s.dil_w == 1),
        segments(wide ? s.R : s.R * s.S),
        width(wide ? s.S * s.C : s.C) {}
};

// Few input channels (a window row of C*S < 16 values would leave most of a micro-kernel's
// reduction idle): the R rows of each window are stacked into the channels first,
//   x2[n][r*C + c][ho][iw] = x[n][c][ho*sh - ph + r*dh][iw]   (0 outside the image),
// a layer of R*C channels, a 1 x S window and vertical stride 1, whose window row is the
// whole window, R*S*C values. The channels-last paths then run on x2, which is never built:
// their copies of its rows are taken from x directly (xt_row), so it costs no memory (the stem
// once wrote and read back a 17 MB x2).
inline bool stacked_rows_preferred(const Conv2dShape& s) {
  return s.groups == 1 && s.R > 1 && s.C * s.S < 16 && s.C * s.R * s.S >= 16 && s.Ho > 0;
}

// The weight gradient stacks the window rows also where a window row's C*S values, rounded
// up to the micro-kernel's NR columns for each of the R rows, take over 1.3x the columns of
// all R*C*S values rounded up once (3 channels 11x11: 64 columns a row of 33, 1.83x; 8
// channels 5x5, 1.43x: bench/ab.py 1.1-1.5x and 1.31-1.35x; LeNet's second layer, 1.0x, ran
// 0.7x stacked).
template <typename T>
bool stacked_rows_weight_grad_preferred(const Conv2dShape& s) {
  if (stacked_rows_preferred(s)) return true;
  const int64_t nr = active_microkernel<T>().nr, CS = s.C * s.S;
  return s.groups == 1 && s.R > 1 && s.Ho > 0 &&
         10 * s.R * round_up(CS, nr) > 13 * round_up(s.R * CS, nr);
}

inline Conv2dShape stacked_rows_shape(const Conv2dShape& s) {
  return {s.N, s.R * s.C, s.Ho, s.W, s.K, 1, s.S, s.Ho, s.Wo, 1, s.stride_w, 0, s.pad_w,
          1, s.dil_w, 1};
}

// Padded row `row` of image n's channels-last copy (cs values a pixel) for a channels-last
// path on layer s, from x. stacked_from: the layer whose rows s stacks (s is then
// stacked_rows_shape(*stacked_from) and x that layer's input), else null (x is s's input).
template <typename T>
void xt_row(const Conv2dShape& s, const Conv2dShape* stacked_from, const T* x, int64_t n,
            int64_t row, int64_t Wp, int64_t cs, T* out, TransposeFn<T> transpose) {
  if (!stacked_from)
    return channels_last_row(x + n * s.C * s.H * s.W, s.C, s.H, s.W, s.pad_h, s.pad_w, row, Wp,
                             cs, out, transpose);
  const Conv2dShape& o = *stacked_from;  // row = ho of o; channel r*C + c = window row r
  const T* image = x + n * o.C * o.H * o.W;
  if (o.C < 8) {
    // Too few channels for the transpose: the row is zeroed in one fill, then each stacked
    // channel's run of x is stored with a stride of one pixel (channels_last_segment per window
    // row, pixel by pixel with a fill per padding pixel, took 45% of LeNet's first weight
    // gradient).
    std::fill(out, out + Wp * cs, T(0));
    const int64_t first = std::min(o.pad_w, Wp);
    const int64_t last = std::clamp<int64_t>(o.W + o.pad_w, first, Wp);
    for (int64_t r = 0; r < o.R; ++r) {
      const int64_t ih = row * o.stride_h - o.pad_h + r * o.dil_h;
      if (!inside(ih, o.H)) continue;
      for (int64_t c = 0; c < o.C; ++c) {
        const T* src = image + (c * o.H + ih) * o.W - o.pad_w;
        T* d = out + r * o.C + c;
        for (int64_t col = first; col < last; ++col) d[col * cs] = src[col];
      }
    }
    return;
  }
  for (int64_t r = 0; r < o.R; ++r)
    channels_last_segment(image, o.C, o.H, o.W, row * o.stride_h - o.pad_h + r * o.dil_h,
                          o.pad_w, Wp, cs, out + r * o.C, transpose);
  if (cs > s.C)
    for (int64_t col = 0; col < Wp; ++col)
      std::fill(out + col * cs + s.C, out + (col + 1) * cs, T(0));
}

// out(l, pointer) for the outputs p0 .. p0+n-1 (row-major, Wo a row) of a channels-last image:
// image + ho*row_step + wo*pixel_step, stepping along the output rows without a division per
// pixel. The steps are taken from locals, not from a shape's fields, which stores through the
// pointers written could alias (that kept them in memory: 8% of the stem's weight gradient).
template <typename T, typename Out>
inline void pixel_pointers(const T* image, int64_t p0, int64_t n, int64_t Wo, int64_t row_step,
                           int64_t pixel_step, const Out& out) {
  const T* row = image + p0 / Wo * row_step;
  for (int64_t l = 0, wo = p0 % Wo; l < n; ++l) {
    out(l, row + wo * pixel_step);
    if (++wo == Wo && l + 1 < n) wo = 0, row += row_step;
  }
}

// The steps of pixel_pointers for layer s over a copy Wp pixels wide of `cs` values a pixel;
// a step that is never taken (one output row or column) is 0, so that a huge stride does not
// overflow it.
inline void pixel_steps(const Conv2dShape& s, int64_t Wp, int64_t cs, int64_t* row_step,
                        int64_t* pixel_step) {
  *row_step = s.Ho > 1 ? s.stride_h * Wp * cs : 0;
  *pixel_step = s.Wo > 1 ? s.stride_w * cs : 0;
}

// Weight gradient of an ungrouped layer as an implicit GEMM over a channels-last copy of x.
//
// The reduction over L = N * P output positions is cut into `splits` fixed ranges (one per
// thread where each gets at least kMinSplitPositions; so the result depends only on the thread
// count). A task (split, part of dW's rows) goes through its positions in bands of output
// rows, copying the input rows each band meets into its own channels-last buffer xt (rows of
// Wp pixels of C channels, zero-padded, cs >= C values apart: xt pixel (ho*sh + r*dh,
// wo*sw + s*dw), rows counted from the band's first, is the input that output (ho, wo) meets
// at tap (r, s)) just before it reads them. The GEMM's A is dy itself (K x L), its MR rows
// read in place by the micro-kernel, in reduction blocks that do not cross a band. For every
// segment of dW columns
//   undilated width (dw == 1): segment r, columns j = s*C + c    (S*C values contiguous in xt)
//   dilated width:             segment (r, s), columns j = c
//   dW_seg (K x width) += dy (K x L_split) * B (L_split x width),
//   B[l][j] = xt[pixel of l + segment][j]
// the micro-kernel reads each B row in place through a row-pointer table (no packing of the
// R*S-times larger column matrix); one pointer table per reduction block serves every segment
// and column panel. Each split's tiles go to its own K_pad x width_pad buffer per segment; dW is
// their sum in split order. Columns past width read the next values of xt (finite: written or
// zeroed; discarded). (Against copies of batch chunks shared by all threads between barriers,
// with tasks over dW's tiles: bench/ab.py both orders at 2 threads, resnet_down 1.21-1.22x,
// LeNet's second layer 1.53-1.54x, strided layers of 3-64 channels 1.17-1.61x; float64 and
// AVX2 alike; the stem and 1 thread unchanged.)
template <typename T>
void weight_grad_channels_last(const Conv2dShape& s, const T* x, const T* dy, T* dw,
                               const Conv2dShape* stacked_from = nullptr) {
  const int64_t C = s.C, K = s.K, R = s.R, S = s.S, P = s.Ho * s.Wo, L = s.N * P;
  const IsaKernels& isa = active_isa();  // one ISA for the whole call
  const MicroKernel<T> uk = IsaKernelsOf<T>::microkernel(isa);
  const TransposeFn<T> transpose = IsaKernelsOf<T>::transpose(isa);
  const int mr = uk.mr, nr = uk.nr;
  const int64_t kc_max = gemm_blocking(uk).kc;
  const WindowLayout layout(s);
  const bool wide = layout.wide;
  // Values per pixel in xt. A B panel's rows lie one output pixel apart; where that is an even
  // number of cache lines (C = 64 or 128 floats), they fall into a few of L1's sets and evict
  // each other before the next row panel of A reuses them, so a segment of one pixel's
  // channels (S = 1, or dilated) gets one spare line per pixel (measured: pointwise and
  // dilated 1.02-1.06x).
  const int64_t line = 64 / static_cast<int64_t>(sizeof(T));
  const int64_t cs = (!wide || S == 1) && C % (2 * line) == 0 ? C + line : C;
  const int64_t Hp = layout.Hp, Wp = layout.Wp;
  const int64_t segments = layout.segments, width = layout.width;
  const int64_t width_pad = round_up(width, nr), m_pad = round_up(K, mr);
  const int64_t col_panels = width_pad / nr, row_panels = m_pad / mr;
  // Groups of at most 4 row panels (their A rows stay in L1 with one B panel), as even as
  // possible so that the tasks weigh the same.
  const int64_t row_groups = ceil_div(row_panels, 4);
  const int64_t panels_per_group = ceil_div(row_panels, row_groups);
  const int64_t seg_size = m_pad * width_pad, split_size = segments * seg_size;

  // Splits of the reduction long enough that their partial sums cost little against their
  // products (2 * kMinSplitPositions flops per partial value), and whose partial sums fit the
  // memory bound; the threads left over split dW's rows (parts) instead.
  constexpr int64_t kMinSplitPositions = 1024;
  const int nthreads = threads_for(2.0 * L * m_pad * width_pad * segments, kMinFlopsPerThread,
                                   ceil_div(L, kc_max) * row_groups);
  const int64_t by_memory = std::max<int64_t>(
      1, (int64_t(32) << 20) / (split_size * static_cast<int64_t>(sizeof(T))));
  const int64_t splits =
      std::clamp<int64_t>(std::min(L / kMinSplitPositions, by_memory), 1, nthreads);
  const int64_t parts = std::min<int64_t>(ceil_div(nthreads, splits), row_groups);
  // Bands of output rows whose input rows (band_in_rows of them) take about 256 KiB of xt,
  // copied just before the products read them (1 MiB, 2 MiB or whole images: the same or up
  // to 1.1x slower on the stem, resnet_down and strided layers of 16 channels).
  constexpr int64_t kBandBytes = 256 << 10;
  const int64_t row_size = Wp * cs;
  const int64_t band_rows = std::clamp<int64_t>(
      kBandBytes / (s.stride_h * row_size * static_cast<int64_t>(sizeof(T))), 1, s.Ho);
  const int64_t band_in_rows = std::min(Hp, (band_rows - 1) * s.stride_h + (R - 1) * s.dil_h + 1);
  const int64_t per_thread = round_up(band_in_rows * row_size + nr, 16);
  T* scratch = thread_scratch<T>(kScratchColumns, nthreads * per_thread);
  T* acc = thread_scratch<T>(kScratchPartials, splits * split_size);
  const T** pointer_scratch = thread_scratch<const T*>(kScratchPackedB, nthreads * kc_max);

  parallel_for(splits * parts, nthreads, [&](int64_t task, int thread) {
    const int64_t split = task / parts, part = task % parts;
    const int64_t g_begin = row_groups * part / parts, g_end = row_groups * (part + 1) / parts;
    T* xt = scratch + thread * per_thread;
    const T** rows = pointer_scratch + thread * kc_max;
    T* split_acc = acc + split * split_size;
    int64_t row_step, pixel_step;
    pixel_steps(s, Wp, cs, &row_step, &pixel_step);
    const int64_t l_begin = L * split / splits, l_end = L * (split + 1) / splits;
    for (int64_t l0 = l_begin; l0 < l_end;) {
      // Outputs [p_begin, p_end) of image n: rows ho0 .. ho0 + band_rows - 1 of the band.
      const int64_t n = l0 / P, ho0 = l0 % P / s.Wo;
      const int64_t p_begin = l0 % P;
      const int64_t p_end = std::min({P, l_end - n * P, (ho0 + band_rows) * s.Wo});
      // The band's padded input rows (xt row i = padded row ho0*sh + i), then zeros for the
      // columns past width that the last of them reads.
      const int64_t in_rows = std::min(
          Hp - ho0 * s.stride_h, ((p_end - 1) / s.Wo - ho0) * s.stride_h + (R - 1) * s.dil_h + 1);
      for (int64_t i = 0; i < in_rows; ++i)
        xt_row(s, stacked_from, x, n, ho0 * s.stride_h + i, Wp, cs, xt + i * row_size, transpose);
      std::fill(xt + in_rows * row_size, xt + in_rows * row_size + nr, T(0));
      const T* dy_image = dy + n * K * P;
      // Reduction blocks of at most kc_max positions, as even as possible.
      const int64_t blocks = ceil_div(p_end - p_begin, kc_max);
      for (int64_t block = 0; block < blocks; ++block) {
        const int64_t p0 = p_begin + block * (p_end - p_begin) / blocks;
        const int64_t kc = p_begin + (block + 1) * (p_end - p_begin) / blocks - p0;
        pixel_pointers(xt, p0 - ho0 * s.Wo, kc, s.Wo, row_step, pixel_step,
                       [rows](int64_t l, const T* pixel) { rows[l] = pixel; });
        const bool accumulate = n * P + p0 > l_begin;
        for (int64_t group = g_begin; group < g_end; ++group) {
          const int64_t i_begin = group * panels_per_group * mr;
          const int64_t i_end = std::min(m_pad, i_begin + panels_per_group * mr);
          // The group's A panels: MR rows of dy read in place (rows past K repeat the last
          // row; their sums are discarded). One B panel (kc rows in L1) against each of them.
          const T* a_rows[4][8];  // panels_per_group <= 4, mr <= 8
          for (int64_t i0 = i_begin; i0 < i_end; i0 += mr)
            for (int i = 0; i < mr; ++i)
              a_rows[(i0 - i_begin) / mr][i] =
                  dy_image + std::min<int64_t>(i0 + i, K - 1) * P + p0;
          for (int64_t seg = 0; seg < segments; ++seg) {
            const int64_t r = wide ? seg : seg / S, s0 = wide ? 0 : seg % S;
            const int64_t seg_offset = (r * s.dil_h * Wp + s0 * s.dil_w) * cs;
            T* seg_acc = split_acc + seg * seg_size;
            for (int64_t j = 0; j < col_panels; ++j)
              for (int64_t i0 = i_begin; i0 < i_end; i0 += mr)
                uk.indirect_ab(kc, a_rows[(i0 - i_begin) / mr], rows, seg_offset + j * nr,
                               seg_acc + i0 * width_pad + j * nr, width_pad, accumulate);
          }
        }
      }
      l0 = n * P + p_end;
    }
  });
  // dW[k][c][r][s] from the splits' segment buffers, summed in split order.
  parallel_for(K, threads_for(double(K) * C * R * S * splits, 1e5, K), [&](int64_t k, int) {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t t = 0; t < S; ++t) {
          const int64_t seg = wide ? r : r * S + t, j = wide ? t * C + c : c;
          const T* v = acc + seg * seg_size + k * width_pad + j;
          T sum = v[0];
          for (int64_t split = 1; split < splits; ++split) sum += v[split * split_size];
          dw[((k * C + c) * R + r) * S + t] = sum;
        }
  });
}

// Forward pass of an ungrouped layer as an implicit GEMM over a channels-last copy of x, for
// layers whose NCHW panels would mostly be gathered (strided, dilated, narrow or few-channel).
//
// Each task copies the input rows its pixels meet into its own channels-last buffer xt (as
// for the weight gradient: output (ho, wo) meets tap (r, s) at xt pixel (ho*sh + r*dh,
// wo*sw + s*dw), rows counted from the task's first, zero-padded), still in its cache when it
// reads them (against copies of batch chunks shared by all tasks, between barriers: A/B both
// orders at 2 threads, resnet_down 1.14-1.17x, strided layers of 16-64 channels 1.2-1.34x,
// the stem 1.06x, LeNet's second layer 1.1x; float64 and AVX2 1.1-1.3x). For MR consecutive
// output pixels and NR output channels, over the same segments as the weight gradient
// (window row r: columns j = s*C + c, contiguous; dilated width: (r, s), j = c):
//   y^T tile (MR pixels x NR channels) += A (pixel rows of xt, read in place by the
//   indirect-A micro-kernel) * B (W^T of the segment, packed once per call)
// and the tile is stored transposed into y (NR rows of MR consecutive pixels), with the bias.
// Tasks: (image, block of pixel groups), each for every output channel.
template <typename T>
void forward_channels_last(const Conv2dShape& s, const MicroKernel<T>& uk, const T* x,
                           const T* w, const T* bias, T* y,
                           const Conv2dShape* stacked_from = nullptr) {
  const int64_t C = s.C, K = s.K, R = s.R, S = s.S, P = s.Ho * s.Wo;
  const int mr = uk.mr, nr = uk.nr;  // mr <= 8
  const TransposeFn<T> transpose = IsaKernelsOf<T>::transpose(active_isa());
  const WindowLayout layout(s);
  const int64_t Hp = layout.Hp, Wp = layout.Wp;
  const bool wide = layout.wide;
  const int64_t segments = layout.segments, width = layout.width;
  const int64_t k_panels = ceil_div(K, nr);

  // B: per panel of NR output channels and segment, W^T (width x NR), zero past K; a panel's
  // segments one after another, as the segmented micro-kernel reads them.
  T* b_packed = thread_scratch<T>(kScratchPackedA, segments * k_panels * width * nr);
  std::vector<int64_t> seg_offsets(segments);  // where segment seg starts from a pixel's row
  const int64_t segs_per_call = std::max<int64_t>(
      1, (16 << 10) / (width * nr * static_cast<int64_t>(sizeof(T))));
  for (int64_t seg = 0; seg < segments; ++seg) {
    const int64_t r = wide ? seg : seg / S, t = wide ? 0 : seg % S;
    seg_offsets[seg] = (r * s.dil_h * Wp + t * s.dil_w) * C;
  }
  for (int64_t seg = 0; seg < segments; ++seg)
    for (int64_t kp = 0; kp < k_panels; ++kp) {
      T* panel = b_packed + (kp * segments + seg) * width * nr;
      for (int64_t j = 0; j < width; ++j) {
        const int64_t c = wide ? j % C : j, r = wide ? seg : seg / S, t = wide ? j / C : seg % S;
        for (int64_t l = 0; l < nr; ++l) {
          const int64_t k = kp * nr + l;
          panel[j * nr + l] = k < K ? w[((k * C + c) * R + r) * S + t] : T(0);
        }
      }
    }

  // Tasks of up to 64 groups of MR pixels (against 8, A/B both orders at 2 threads: the stem
  // 1.47x on AVX-512, resnet_down 1.14-1.15x, LeNet's second layer 1.11-1.14x, rows of 20
  // 1.16-1.4x; at 1 thread the stem 1.23x, the others unchanged), fewer where the batch
  // would leave the threads fewer than 4 tasks each.
  constexpr int64_t kGroupsPerTask = 64;
  const int64_t groups = ceil_div(P, mr);
  const int64_t groups_per_task = std::clamp<int64_t>(
      ceil_div(groups * s.N, 4 * get_num_threads()), 1, kGroupsPerTask);
  const int64_t blocks = ceil_div(groups, groups_per_task);
  const int nthreads = threads_for(2.0 * s.N * K * P * C * R * S, kMinFlopsPerThread,
                                   s.N * blocks);
  // Per thread: the input rows a task's pixels meet (at most task_in_rows), and the task's
  // MR-row tiles stacked (kGroupsPerTask * MR pixels x NR channels), stored into y's channel
  // planes by one register transpose (a scalar store of each tile's transpose took a quarter
  // of the stem's time).
  const int64_t tile_rows = groups_per_task * mr, row_size = Wp * C;
  const int64_t task_out_rows = std::min(s.Ho, ceil_div(tile_rows, s.Wo) + 1);
  const int64_t task_in_rows =
      std::min(Hp, (task_out_rows - 1) * s.stride_h + (R - 1) * s.dil_h + 1);
  const int64_t per_thread = round_up(task_in_rows * row_size + tile_rows * nr, 16);
  T* scratch = thread_scratch<T>(kScratchColumns, nthreads * per_thread);

  parallel_for(s.N * blocks, nthreads, [&](int64_t task, int thread) {
    const int64_t n = task / blocks, block = task % blocks;
    T* xt = scratch + thread * per_thread;
    T* tile = xt + task_in_rows * row_size;
    T* yn = y + n * K * P;
    const int64_t g_begin = block * groups_per_task;
    const int64_t g_end = std::min(groups, g_begin + groups_per_task);
    const int64_t p_begin = g_begin * mr, pixels = std::min(P, g_end * mr) - p_begin;
    // The input rows of the task's output rows ho0 .. (xt row i = padded row ho0*sh + i).
    const int64_t ho0 = p_begin / s.Wo, ho_last = (p_begin + pixels - 1) / s.Wo;
    const int64_t in_rows = std::min(Hp - ho0 * s.stride_h,
                                     (ho_last - ho0) * s.stride_h + (R - 1) * s.dil_h + 1);
    for (int64_t i = 0; i < in_rows; ++i)
      xt_row(s, stacked_from, x, n, ho0 * s.stride_h + i, Wp, C, xt + i * row_size, transpose);
    // The task's pixel rows of xt, once for every panel of output channels (missing pixels
    // of the last group repeat the group's first; measured: stem7x7 forward 1.04-1.05x).
    const T* base[kGroupsPerTask][8];  // MR <= 8
    int64_t row_step, pixel_step;
    pixel_steps(s, Wp, C, &row_step, &pixel_step);
    pixel_pointers(xt, p_begin - ho0 * s.Wo, pixels, s.Wo, row_step, pixel_step,
                   [&base, mr](int64_t l, const T* pixel) { base[l / mr][l % mr] = pixel; });
    for (int64_t l = pixels; l < (g_end - g_begin) * mr; ++l)
      base[l / mr][l % mr] = base[l / mr][0];
    for (int64_t kp = 0; kp < k_panels; ++kp) {
      // Runs of segments whose B panels fit in half of L1 (there while every group uses
      // them) are summed in registers by one call per group of MR pixels (measured against
      // a call per segment: LeNet's second layer 1.1x, dilated forward and input grad
      // 1.02-1.10x, rows of 20 1.13-1.16x).
      for (int64_t seg0 = 0; seg0 < segments; seg0 += segs_per_call) {
        const int64_t n_segs = std::min(segs_per_call, segments - seg0);
        for (int64_t group = g_begin; group < g_end; ++group)
          uk.indirect_a_segments(width, n_segs, base[group - g_begin],
                                 seg_offsets.data() + seg0,
                                 b_packed + (kp * segments + seg0) * width * nr,
                                 tile + (group * mr - p_begin) * nr, nr, seg0 > 0);
      }
      const int64_t k0 = kp * nr, cols = std::min<int64_t>(nr, K - k0);
      if (bias)
        for (int64_t i = 0; i < pixels; ++i)
          for (int64_t l = 0; l < cols; ++l) tile[i * nr + l] += bias[k0 + l];
      transpose(tile, nr, pixels, cols, yn + k0 * P + p_begin, P);
    }
  });
}

// Row i (padded coordinates) of the phase planes of one channel plane src (H x W): the plane
// zero-padded by (pad_h, pad_w) and split by column phase e < phases,
//   out[(e*Hq + i)*Wq + j] = src[i - pad_h][j*phases + e - pad_w]     (0 outside the image),
// so that a layer of horizontal stride `phases` reads, at tap column offset o = t*dil_w, the
// outputs wo, wo+1, ... of a row as the contiguous run at phase o % phases, column wo + o / phases.
template <typename T>
void phase_planes_row(const T* src, int64_t H, int64_t W, int64_t pad_h, int64_t pad_w,
                      int64_t phases, int64_t Hq, int64_t Wq, int64_t i, T* out) {
  const int64_t ih = i - pad_h;
  for (int64_t e = 0; e < phases; ++e) {
    T* row = out + (e * Hq + i) * Wq;
    if (!inside(ih, H)) {
      std::fill(row, row + Wq, T(0));
      continue;
    }
    const T* line = src + ih * W;
    for (int64_t j = 0; j < Wq; ++j) {
      const int64_t iw = j * phases + e - pad_w;
      row[j] = inside(iw, W) ? line[iw] : T(0);
    }
  }
}

// The phase planes of images [n0, n0 + nb) of layer s's input x into xq (phases * Hq * Wq
// values per channel), row by row in parallel.
template <typename T>
void phase_planes(const Conv2dShape& s, const T* x, int64_t n0, int64_t nb, int64_t phases,
                  int64_t Hq, int64_t Wq, T* xq) {
  const int64_t rows = nb * s.C * Hq;
  parallel_for(rows, threads_for(double(rows) * phases * Wq, 1e5, rows), [&](int64_t task, int) {
    const int64_t i = task % Hq, plane_index = task / Hq;  // (image, channel)
    phase_planes_row(x + (n0 * s.C + plane_index) * s.H * s.W, s.H, s.W, s.pad_h, s.pad_w,
                     phases, Hq, Wq, i, xq + plane_index * phases * Hq * Wq);
  });
}

// Where row q = (c, r, t) of the column matrix starts in one image's phase planes: the value
// that output (0, 0) meets at tap (r, t); output (ho, wo) of a stride-`phases` row meets it
// ho*stride_h*Wq + wo further on.
inline int64_t phase_tap_offset(const Conv2dShape& s, int64_t phases, int64_t Hq, int64_t Wq,
                                int64_t q) {
  const int64_t c = q / (s.R * s.S), r = (q / s.S) % s.R, o = (q % s.S) * s.dil_w;
  return ((c * phases + o % phases) * Hq + r * s.dil_h) * Wq + o / phases;
}

// Horizontal stride 2, few channels and output rows of whole panels: forward_parity_planes
// (measured against the channels-last path, A/B both orders: stem7x7 1.08-1.19x at 1 and 2
// threads, a 3-channel 5x5 layer 1.0-1.2x; with 16 or 64 channels the channels-last path
// stays faster, this one 0.6-0.8x).
inline bool parity_planes_preferred(const Conv2dShape& s, int nr) {
  return s.groups == 1 && s.stride_w == 2 && s.dil_w == 1 && s.Wo % nr == 0 && s.C < 8;
}

// Forward pass of an ungrouped layer with horizontal stride 2 whose output rows are a whole
// number of B panels (the 7x7 stem: 112 = 7 x 16), as the NCHW GEMM with B read in place.
// Per batch chunk, each input plane is zero-padded and split by column parity,
//   xq[n][c][e][i][j] = x[n][c][i - pad_h][2j + e - pad_w]      (0 outside the image),
// so that tap (r, s) of the outputs (ho, wo .. wo+NR-1) is the contiguous run
//   xq[n][c][s % 2][ho*sh + r*dh][wo + s/2 ...]
// and every row of every B panel (q = (c, r, s), NR outputs of one row) points into xq:
//   y_n (K x P) = W (K x CRS, packed once per call) * col (CRS x P, rows through pointers)
// written straight into y's channel planes. Tasks: (image, block of NC outputs).
template <typename T>
void forward_parity_planes(const Conv2dShape& s, const MicroKernel<T>& uk, const T* x,
                           const T* w, const T* bias, T* y) {
  const int64_t C = s.C, K = s.K, R = s.R, S = s.S, P = s.Ho * s.Wo, CRS = C * R * S;
  const int64_t Wo = s.Wo, sh = s.stride_h, dh = s.dil_h;
  const GemmBlocking blk = gemm_blocking(uk);
  const int64_t Hq = (s.Ho - 1) * sh + (R - 1) * dh + 1;  // padded rows the windows read
  const int64_t Wq = Wo + (S - 1) / 2;                       // columns j <= wo + s/2
  const int64_t plane = Hq * Wq, image = 2 * C * plane;
  const int64_t chunk = std::clamp<int64_t>(
      (64 << 20) / std::max<int64_t>(image * static_cast<int64_t>(sizeof(T)), 1), 1, s.N);
  T* xq = thread_scratch<T>(kScratchStacked, chunk * image);
  const int64_t m_pad = round_up(K, uk.mr);
  int64_t a_size;
  const T* a_packed = pack_group_weights(w, 1, K, CRS, CRS, 1, blk, uk.mr, &a_size);
  // Tasks: (image, block of output columns), whole images where the batch feeds the threads
  // (as in conv2d_forward's NCHW path).
  const int64_t block_cols =
      round_up(ceil_div(P, ceil_div(4 * get_num_threads(), chunk)), uk.nr);
  const int64_t col_blocks = ceil_div(P, block_cols);
  const int nthreads =
      threads_for(2.0 * chunk * K * P * CRS, kMinFlopsPerThread, chunk * col_blocks);
  const T** pointer_scratch = thread_scratch<const T*>(kScratchColumns, nthreads * blk.kc);
  // Where row q = (c, r, t) of a panel starts, relative to the panel's first output.
  int64_t* tap_offsets = thread_scratch<int64_t>(kScratchPartials, CRS);
  for (int64_t q = 0; q < CRS; ++q) tap_offsets[q] = phase_tap_offset(s, 2, Hq, Wq, q);

  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.N - n0);
    phase_planes(s, x, n0, nb, 2, Hq, Wq, xq);
    parallel_for(nb * col_blocks, nthreads, [&](int64_t task, int thread) {
      const int64_t nl = task / col_blocks, p0 = (task % col_blocks) * block_cols;
      const int64_t nc = std::min(block_cols, P - p0);
      const T* img = xq + nl * image;
      T* yn = y + (n0 + nl) * K * P;
      gemm_rows(
          uk, blk, K, nc, CRS, [&](int64_t pc, int64_t) { return a_packed + pc * m_pad; },
          [&](int64_t pc, int64_t kc, int64_t j0, int64_t, T*, const T** rows) {
            const int64_t p = p0 + j0;  // a panel within one output row
            const T* first = img + (p / Wo) * sh * Wq + p % Wo;
            for (int64_t k = 0; k < kc; ++k) rows[k] = first + tap_offsets[pc + k];
          },
          yn + p0, P, false, static_cast<T*>(nullptr), pointer_scratch + thread * blk.kc);
      if (bias)
        for (int64_t m = 0; m < K; ++m) {
          T* row = yn + m * P + p0;
          for (int64_t j = 0; j < nc; ++j) row[j] += bias[m];
        }
    });
  }
}

// Few input channels, enough output channels to fill the micro-kernel's width, stride 2 and
// output rows long enough for its reduction: weight_grad_phase_planes (measured against the
// channels-last path, A/B both orders: stem7x7 1.26-1.42x at 2 threads, 1.26-1.41x at 1,
// float64 1.22-1.30x; with output rows of 32 (a 3-channel 5x5 stride-2 layer) 0.99-1.13x, of
// 20 0.89-1.02x, so those stay). Stride-1 layers (cifar_c1, rows of 32; 3-channel layers with
// rows of 64-224) run 1.1-1.75x faster on the channels-last path since that splits its
// reduction per thread.
inline bool phase_planes_weight_grad_preferred(const Conv2dShape& s) {
  return s.groups == 1 && s.stride_w == 2 && s.C < 8 && s.K >= 16 && s.Wo >= 64;
}

// Weight gradient of an ungrouped layer with few input channels (horizontal stride 2, any
// vertical stride and dilation), transposed so that no GEMM column is padded: the
// channels-last path's columns are window rows of S*C values (the stem's 21 padded to 32),
// here the columns are the K output channels and the rows the C*R*S taps. Per output row
// (n, ho):
//   dW^T (CRS x K) += col_row (CRS x Wo) * dy_row^T (Wo x K)
// where row q = (c, r, t) of col_row is a contiguous run of x's phase planes (phase_planes_row,
// built once per batch chunk), read in place as A through row pointers, and dy_row^T is the
// row's K x Wo block of dy transposed into the thread's scratch (K padded to NR with zeros),
// read as B. Tasks: fixed slices of the N*Ho output rows (their number depends on the shape
// only), each summing into its own dW^T; the slices are added in order, so the result does
// not depend on the thread count.
constexpr int64_t kMaxPhasePlanesK = 256;  // dW^T's columns summed at once

template <typename T>
void weight_grad_phase_planes(const Conv2dShape& s, const T* x, const T* dy, T* dw) {
  const int64_t C = s.C, K = s.K, R = s.R, S = s.S, Wo = s.Wo, P = s.Ho * Wo, CRS = C * R * S;
  const int64_t phases = s.stride_w, sh = s.stride_h;
  const IsaKernels& isa = active_isa();  // one ISA for the whole call
  const MicroKernel<T> uk = IsaKernelsOf<T>::microkernel(isa);
  const TransposeFn<T> transpose = IsaKernelsOf<T>::transpose(isa);
  const int mr = uk.mr, nr = uk.nr;
  const int64_t Hq = (s.Ho - 1) * sh + (R - 1) * s.dil_h + 1;
  const int64_t Wq = Wo + ((S - 1) * s.dil_w) / phases;
  const int64_t plane = Hq * Wq, image = phases * C * plane;
  const int64_t m_pad = round_up(CRS, mr), k_pad = round_up(K, nr), part = m_pad * k_pad;
  const int64_t chunk = std::clamp<int64_t>(
      (8 << 20) / std::max<int64_t>(image * static_cast<int64_t>(sizeof(T)), 1), 1, s.N);
  const int64_t rows_total = s.N * s.Ho, slices = std::min<int64_t>(rows_total, 32);
  const int nthreads = threads_for(2.0 * rows_total * Wo * m_pad * k_pad, kMinFlopsPerThread,
                                   slices);
  T* xq = thread_scratch<T>(kScratchStacked, chunk * image);
  T* partial = thread_scratch<T>(kScratchPartials, slices * part);
  // dy's rows are transposed kRowsPerTranspose output rows at a time: each of dy's K runs is
  // then that many rows long (1 at a time, the transposes' loads missed most of the time).
  constexpr int64_t kRowsPerTranspose = 4;
  const int64_t batch_cols = kRowsPerTranspose * Wo;
  T* dy_rows = thread_scratch<T>(kScratchPackedB, nthreads * batch_cols * k_pad);
  const T** b_pointers = thread_scratch<const T*>(kScratchColumns, nthreads * batch_cols);
  int64_t* tap_offsets = thread_scratch<int64_t>(kScratchPackedA, m_pad);
  for (int64_t q = 0; q < m_pad; ++q)  // rows past CRS repeat the last (discarded)
    tap_offsets[q] = phase_tap_offset(s, phases, Hq, Wq, std::min(q, CRS - 1));
  for (int thread = 0; thread < nthreads; ++thread) {
    T* rows = dy_rows + thread * batch_cols * k_pad;
    for (int64_t l = 0; l < batch_cols; ++l) {
      std::fill(rows + l * k_pad + K, rows + (l + 1) * k_pad, T(0));
      b_pointers[thread * batch_cols + l] = rows + l * k_pad;
    }
  }

  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.N - n0);
    phase_planes(s, x, n0, nb, phases, Hq, Wq, xq);
    parallel_for(slices, nthreads, [&](int64_t slice, int thread) {
      // The slice's rows that fall in this chunk.
      const int64_t begin = std::max(rows_total * slice / slices, n0 * s.Ho);
      const int64_t end = std::min(rows_total * (slice + 1) / slices, (n0 + nb) * s.Ho);
      T* out = partial + slice * part;
      T* rows = dy_rows + thread * batch_cols * k_pad;
      for (int64_t row = begin; row < end;) {
        // Rows row .. row + batch - 1 of one image.
        const int64_t n = row / s.Ho, ho = row % s.Ho;
        const int64_t batch = std::min({kRowsPerTranspose, end - row, s.Ho - ho});
        transpose(dy + n * K * P + ho * Wo, P, K, batch * Wo, rows, k_pad);
        for (int64_t b = 0; b < batch; ++b) {
          const bool accumulate = row + b > rows_total * slice / slices;
          const T* image_row = xq + (n - n0) * image + (ho + b) * sh * Wq;
          const T* const* b_rows = b_pointers + thread * batch_cols + b * Wo;
          for (int64_t q0 = 0; q0 < m_pad; q0 += mr) {
            const T* a_rows[8];  // mr <= 8
            for (int i = 0; i < mr; ++i) a_rows[i] = image_row + tap_offsets[q0 + i];
            for (int64_t j = 0; j < k_pad; j += nr)
              uk.indirect_ab(Wo, a_rows, b_rows, j, out + q0 * k_pad + j, k_pad, accumulate);
          }
        }
        row += batch;
      }
    });
  }
  // dw[k][q] = sum over the slices, in order, of dW^T[q][k]: row q of every slice's dW^T
  // summed along k (down dW^T's columns, every load was on another line: 2% of the stem's
  // weight gradient).
  parallel_for(CRS, threads_for(double(K) * CRS * slices, 1e5, CRS), [&](int64_t q, int) {
    T sums[kMaxPhasePlanesK];
    for (int64_t k0 = 0; k0 < K; k0 += kMaxPhasePlanesK) {
      const int64_t width = std::min(kMaxPhasePlanesK, K - k0);
      const T* row = partial + q * k_pad + k0;
      std::copy(row, row + width, sums);
      for (int64_t sl = 1; sl < slices; ++sl)
        for (int64_t k = 0; k < width; ++k) sums[k] += row[sl * part + k];
      for (int64_t k = 0; k < width; ++k) dw[(k0 + k) * CRS + q] = sums[k];
    }
  });
}

// Few-channel stride-1 layers (cifar_c1, LeNet's first), where the GEMM formulations' tiles
// stay partly idle (K = 32 output channels against MR = 6 rows; the weight gradient's
// C*R*S = 27 columns against NR = 32), run as direct loops over whole planes: each image is
// zero-padded into a task's buffer (WindowLayout's Hp x Wp region) and the taps are fixed
// offsets in it. The weight gradient and input gradient want rows of at least 3 vectors
// (float 24, double 16): at rows of 14 and 20 floats, where the row's shifted last vector and
// the row loop weigh more, the weight gradient ran 0.77-0.9x the GEMM's speed and the input
// gradient 0.86-1.1x; the forward pass takes rows of one vector or more (rows of 14 and 20
// floats 1.1-1.8x faster than on the GEMM). Forward passes to at most kPlaneTapsMaxOutputs
// output channels go this way whatever their input channels: the GEMM's A then has one or
// two row tiles, against which every B panel's packing or row pointers weigh (bench/ab.py,
// 2 threads: 32 channels 56x56 to 8, 12 and 14: 3.8x, 2.7x, 2.7-3.0x, float64 1.4-2.1x;
// 256 channels 14x14 to 8 1.6x, float64 3.5x; rows of 10-20, 6-16 channels to 8-12
// 1.1-1.8x, float64 0.97-2.8x; to 15 on rows of 20 0.95-0.99x, to 16 0.84x), on rows of
// two vectors or more (rows of 10 floats 0.43x on the baseline) and not on the baseline,
// whose 2 x 2 tiles ran float64 rows of 12-20 0.73-0.97x.
constexpr int64_t kPlaneTapsMaxOutputs = 12;
template <typename T>
bool plane_taps_preferred(const Conv2dShape& s, bool forward = false) {
  constexpr int64_t L = 32 / sizeof(T);
  const int64_t min_cols = forward ? L : std::max<int64_t>(3 * L, 16);
  const bool few_channels =
      s.C * s.S < 16 || (forward && s.K <= kPlaneTapsMaxOutputs && s.Wo >= 2 * L &&
                         active_plane_kernels<T>().vector_registers >= 16);
  return s.groups == 1 && s.stride_h == 1 && s.stride_w == 1 && s.Wo >= min_cols &&
         few_channels && s.C * s.R * s.S >= 16;
}

// Image n of x into the padded planes xpad (C planes of layout's Hp x Wp, padding already
// zero: every call writes the same positions).
template <typename T>
void pad_image(const Conv2dShape& s, const WindowLayout& layout, const T* x, int64_t n,
               T* xpad) {
  const int64_t plane = layout.Hp * layout.Wp;
  const int64_t rows = std::clamp<int64_t>(layout.Hp - s.pad_h, 0, s.H);
  const int64_t cols = std::clamp<int64_t>(layout.Wp - s.pad_w, 0, s.W);
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t ih = 0; ih < rows; ++ih)
      copy_run(x + ((n * s.C + c) * s.H + ih) * s.W, cols,
               xpad + c * plane + (ih + s.pad_h) * layout.Wp + s.pad_w);
}

// Forward pass (plane_taps_preferred layers):
//   y[n][k][ho][wo] = bias[k] + sum over (c, r, s) of w[k][c][r][s] * xpad[c][ho + r*dh][wo + s*dw]
// rows_taps: tiles of a few output planes by a few vectors of a row, all C*R*S taps summed in
// registers. Tasks: (image, block of output channels).
template <typename T>
void forward_plane_taps(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t K = s.K, P = s.Ho * s.Wo, CRS = s.C * s.R * s.S;
  const PlaneKernels<T> kernels = active_plane_kernels<T>();
  const WindowLayout layout(s);
  const int64_t plane = layout.Hp * layout.Wp;
  std::vector<int64_t> tap_off;  // tap (c, r, t) of the padded image, in w's order
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t)
        tap_off.push_back(c * plane + r * s.dil_h * layout.Wp + t * s.dil_w);
  const int nthreads = threads_for(2.0 * s.N * K * P * CRS, kMinFlopsPerThread, s.N * K);
  const int64_t parts = std::min<int64_t>(ceil_div(nthreads, s.N), ceil_div(K, 4));
  const int64_t k_block = ceil_div(K, parts);
  T* scratch = thread_scratch<T>(kScratchColumns, nthreads * s.C * plane);
  std::fill(scratch, scratch + nthreads * s.C * plane, T(0));
  parallel_for(s.N * parts, nthreads, [&](int64_t task, int thread) {
    const int64_t n = task / parts, part = task % parts;
    const int64_t k_begin = std::min(K, part * k_block), k_end = std::min(K, k_begin + k_block);
    T* xpad = scratch + thread * s.C * plane;
    pad_image(s, layout, x, n, xpad);
    kernels.rows_taps(s.Ho, s.Wo, xpad, layout.Wp, tap_off.data(), CRS, w + k_begin * CRS, CRS,
                      k_end - k_begin, bias ? bias + k_begin : nullptr,
                      y + (n * K + k_begin) * P, P);
  });
}

// Input gradient of strided layers with few input channels (the stem: 3 channels, 7x7,
// stride 2) as sh*sw stride-1 correlations of dy, one per phase (a, b) of dx's rows and
// columns, each over the taps that reach it (tr = ra + sh*t, ts = rb + sw*u):
//   dx[c][sh*i + a][sw*j + b] = bias[c] + sum over (k, t, u) of
//                               w[k][c][tr][ts] * dy[k][i + da - t][j + db - u]
// with ra = (a + ph) % sh, da = (a + ph - ra) / sh (columns alike), dy 0 outside. rows_taps
// sums each phase's K*Ta*Tb taps in registers, over a band of dy's rows copied zero-padded
// into the task's scratch (about 512 KiB, so that it stays in L2 across the phases and the
// tiles: bands of 768 KiB-3 MiB measured no faster); the phases' rows go to a second scratch
// and are interleaved into dx. No column matrix: on the GEMM path the stem's was 15 MB an
// image in float64, written and read back through memory (perf: the GEMM 43% of the samples,
// col2im 14%, packing dy 10%). Tasks: (image, band of phase rows), each writing its own rows.
struct StridePhase {
  int64_t first_tap, offset, taps, size;  // first tap ra, shift da, taps Ta, dx rows in phase
};

inline StridePhase stride_phase(int64_t a, int64_t stride, int64_t pad, int64_t kernel,
                                int64_t size) {
  const int64_t first = (a + pad) % stride;
  return {first, (a + pad - first) / stride, first < kernel ? ceil_div(kernel - first, stride) : 0,
          a < size ? ceil_div(size - a, stride) : 0};
}

// AVX-512 only, whose 32 registers give rows_taps tiles of 4 planes (all of the stem's 3
// channels feed on each loaded vector of dy): AVX2's tiles of 2 planes ran the stem's input
// gradient 0.75x as fast as its GEMM, the baseline's 2 x 2 tiles 8x slower.
template <typename T>
bool phase_taps_input_grad_preferred(const Conv2dShape& s) {
  constexpr int64_t L = 32 / sizeof(T);
  const int64_t narrowest = s.W / s.stride_w;  // the shortest phase row
  return active_plane_kernels<T>().vector_registers >= 32 && s.groups == 1 &&
         (s.stride_h > 1 || s.stride_w > 1) && s.dil_h == 1 && s.dil_w == 1 && s.C <= 4 &&
         s.R >= s.stride_h && s.S >= s.stride_w && narrowest >= 3 * L &&
         s.H / s.stride_h >= 1 && s.K * (s.R / s.stride_h) * (s.S / s.stride_w) >= 16;
}

// False, having done nothing, where even a band of one row would take more than 8 MiB of
// scratch a thread (thousands of output channels on wide images): the GEMM path then.
template <typename T>
bool input_grad_phase_taps(const Conv2dShape& s, const T* w, const T* dy, const T* bias, T* dx) {
  const int64_t sh = s.stride_h, sw = s.stride_w, K = s.K, C = s.C, RS = s.R * s.S;
  const int64_t HW = s.H * s.W, P = s.Ho * s.Wo;
  std::vector<StridePhase> rows(sh), cols(sw);
  for (int64_t a = 0; a < sh; ++a) rows[a] = stride_phase(a, sh, s.pad_h, s.R, s.H);
  for (int64_t b = 0; b < sw; ++b) cols[b] = stride_phase(b, sw, s.pad_w, s.S, s.W);
  // The band's dy rows run from i0 + lo to i1 + hi (exclusive), its columns from lo_c.
  int64_t lo = 0, hi = 0, lo_c = 0, hi_c = 0, phase_rows = 0, phase_cols = 0;
  for (const StridePhase& r : rows)
    lo = std::min(lo, r.offset - r.taps + 1), hi = std::max(hi, r.offset),
    phase_rows = std::max(phase_rows, r.size);
  for (const StridePhase& c : cols)
    lo_c = std::min(lo_c, c.offset - c.taps + 1), hi_c = std::max(hi_c, c.offset),
    phase_cols = std::max(phase_cols, c.size);
  const int64_t Wp = phase_cols + hi_c - lo_c;
  const int64_t row_bytes = K * Wp * static_cast<int64_t>(sizeof(T));
  if (row_bytes * (1 + hi - lo) > (8 << 20)) return false;
  const int nthreads =
      threads_for(2.0 * s.N * K * P * C * RS, kMinFlopsPerThread, s.N * phase_rows);
  int64_t band = std::max<int64_t>(1, (512 << 10) / row_bytes - (hi - lo));
  band = std::min(band, ceil_div(s.N * phase_rows, 4 * int64_t(nthreads)));  // tasks to share
  band = std::clamp<int64_t>(band, 1, phase_rows);
  const int64_t bands = ceil_div(phase_rows, band), band_rows = band + hi - lo;
  const int64_t band_plane = band_rows * Wp;
  // Each phase's taps (k, t, u) as offsets into the band, and its weights in the same order.
  const int64_t phases = sh * sw;
  std::vector<int64_t> tap_begin(phases + 1, 0);
  for (int64_t a = 0; a < sh; ++a)
    for (int64_t b = 0; b < sw; ++b)
      tap_begin[a * sw + b + 1] = tap_begin[a * sw + b] + K * rows[a].taps * cols[b].taps;
  const int64_t all_taps = tap_begin[phases];
  std::vector<int64_t> tap_off(all_taps);
  std::vector<T> weights(C * all_taps);  // phase p: C rows of its taps, from C * tap_begin[p]
  for (int64_t a = 0; a < sh; ++a)
    for (int64_t b = 0; b < sw; ++b) {
      const int64_t p = a * sw + b, taps = tap_begin[p + 1] - tap_begin[p];
      int64_t q = 0;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t t = 0; t < rows[a].taps; ++t)
          for (int64_t u = 0; u < cols[b].taps; ++u, ++q) {
            tap_off[tap_begin[p] + q] =
                k * band_plane + (rows[a].offset - t - lo) * Wp + cols[b].offset - u - lo_c;
            const int64_t r = rows[a].first_tap + sh * t, ts = cols[b].first_tap + sw * u;
            for (int64_t c = 0; c < C; ++c)
              weights[C * tap_begin[p] + c * taps + q] = w[((k * C + c) * s.R + r) * s.S + ts];
          }
    }
  const PlaneKernels<T> kernels = active_plane_kernels<T>();
  const int64_t out_size = C * band * phase_cols;  // one phase's rows of the band
  T* scratch = thread_scratch<T>(kScratchColumns, nthreads * (K * band_plane + phases * out_size));
  parallel_for(s.N * bands, nthreads, [&](int64_t task, int thread) {
    const int64_t n = task / bands, i0 = task % bands * band, i1 = std::min(phase_rows, i0 + band);
    T* in = scratch + thread * (K * band_plane + phases * out_size);
    T* out = in + K * band_plane;
    // dy rows i0 + lo .. i1 + hi and columns lo_c .. lo_c + Wp, zero outside dy.
    const int64_t first_col = std::max<int64_t>(0, lo_c), col_end = std::min(s.Wo, lo_c + Wp);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t l = 0; l < i1 - i0 + hi - lo; ++l) {
        T* d = in + k * band_plane + l * Wp;
        const int64_t ho = i0 + lo + l;
        if (ho < 0 || ho >= s.Ho || col_end <= first_col) {
          std::fill(d, d + Wp, T(0));
          continue;
        }
        std::fill(d, d + (first_col - lo_c), T(0));
        copy_run(dy + ((n * K + k) * s.Ho + ho) * s.Wo + first_col, col_end - first_col,
                 d + (first_col - lo_c));
        std::fill(d + (col_end - lo_c), d + Wp, T(0));
      }
    for (int64_t a = 0; a < sh; ++a) {
      const int64_t r1 = std::min(i1, rows[a].size);
      if (r1 <= i0) continue;
      for (int64_t b = 0; b < sw; ++b) {
        const int64_t p = a * sw + b;
        kernels.rows_taps(r1 - i0, cols[b].size, in, Wp, tap_off.data() + tap_begin[p],
                          tap_begin[p + 1] - tap_begin[p], weights.data() + C * tap_begin[p],
                          tap_begin[p + 1] - tap_begin[p], C, bias, out + p * out_size,
                          (r1 - i0) * cols[b].size);
      }
      // Interleave the phases' rows into dx's rows sh*i + a.
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = i0; i < r1; ++i) {
          T* d = dx + (n * C + c) * HW + (sh * i + a) * s.W;
          for (int64_t b = 0; b < sw; ++b) {
            const int64_t width = cols[b].size;
            const T* src = out + (a * sw + b) * out_size + (c * (r1 - i0) + i - i0) * width;
            for (int64_t j = 0; j < width; ++j) d[sw * j + b] = src[j];
          }
        }
    }
  });
  return true;
}

// Weight gradient (plane_taps_preferred layers) as dot products over whole planes:
//   sums[split][k][c][r][s][lane] += sum over (ho, wo) of one vector lane of
//                                    dy[n][k][ho][wo] * xpad[c][ho + r*dh][wo + s*dw]
// for the images n of the split, dy read in place: rows_dots runs a block of planes of dy
// against the S taps of each window row, each vector loaded once per tile. Tasks: (split of
// the batch, block of output channels); dW = the lanes, then the splits, summed in order, so
// the result depends on the thread count only. Returns false where dW came out non-finite:
// the zeroed lanes of a row's last vector (0 * dy) may have met an infinity, in dy or in an
// x that no window of theirs reads, so the caller recomputes it exactly.
template <typename T>
bool weight_grad_plane_dots(const Conv2dShape& s, const T* x, const T* dy, T* dw) {
  constexpr int64_t L = 32 / sizeof(T);
  const int64_t C = s.C, K = s.K, R = s.R, S = s.S, P = s.Ho * s.Wo;
  const int64_t CRS = C * R * S;
  const PlaneKernels<T> kernels = active_plane_kernels<T>();
  const WindowLayout layout(s);
  const int64_t Wp = layout.Wp, plane = layout.Hp * Wp;
  const int nthreads = threads_for(2.0 * s.N * K * P * CRS, kMinFlopsPerThread, s.N * K);
  const int64_t splits = std::min<int64_t>(nthreads, s.N);
  const int64_t parts = std::min<int64_t>(ceil_div(nthreads, splits), ceil_div(K, 4));
  const int64_t k_block = ceil_div(K, parts);
  const int64_t split_size = K * CRS * L;
  T* sums = thread_scratch<T>(kScratchPartials, splits * split_size);
  T* scratch = thread_scratch<T>(kScratchColumns, nthreads * C * plane);
  std::vector<int64_t> offsets(S);
  for (int64_t t = 0; t < S; ++t) offsets[t] = t * s.dil_w;
  std::vector<int64_t> windows(C * R);  // window row (c, r) of xpad
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = 0; r < R; ++r) windows[c * R + r] = c * plane + r * s.dil_h * Wp;

  parallel_for(splits * parts, nthreads, [&](int64_t task, int thread) {
    const int64_t split = task / parts, part = task % parts;
    const int64_t k_begin = std::min(K, part * k_block), k_end = std::min(K, k_begin + k_block);
    T* xpad = scratch + thread * C * plane;
    T* split_sums = sums + split * split_size;
    std::fill(xpad, xpad + C * plane, T(0));  // the padding, never written after this
    std::fill(split_sums + k_begin * CRS * L, split_sums + k_end * CRS * L, T(0));
    for (int64_t n = s.N * split / splits; n < s.N * (split + 1) / splits; ++n) {
      pad_image(s, layout, x, n, xpad);
      kernels.rows_dots(s.Ho, s.Wo, dy + (n * K + k_begin) * P, P, k_end - k_begin, xpad,
                        windows.data(), C * R, Wp, offsets.data(), S,
                        split_sums + k_begin * CRS * L, CRS * L);
    }
  });
  bool finite = true;
  for (int64_t i = 0; i < K * CRS; ++i) {
    T sum = 0;
    for (int64_t split = 0; split < splits; ++split) {
      const T* lanes = sums + split * split_size + i * L;
      T part = lanes[0];
      for (int64_t l = 1; l < L; ++l) part += lanes[l];
      sum += part;
    }
    dw[i] = sum;
    finite = finite && std::isfinite(sum);
  }
  return finite;
}

// Weight gradient of an ungrouped 1x1 layer (stride 1, no padding), whose column matrix is x
// itself, transposed so that both operands come without a gather:
//   dW^T (C x K) = sum_n x_n (C x P) * dy_n^T (P x K)
// A: MR rows of x_n read in place through row pointers; B: NR-column panels of dy_n^T, packed
// per reduction block by the ISA's transpose straight from NR rows of dy_n. Tasks: blocks of
// kPointwiseColumns output channels (dW^T columns), each over the whole reduction, so the
// result does not depend on the thread count; dW^T is transposed into dw at the end.
// Measured against the channels-last path (A/B both orders): pointwise 1.25-1.30x at 2
// threads, 1.27x with the caches flushed, 1.12x at 1 thread, float64 1.15-1.75x.
constexpr int64_t kPointwiseColumns = 64, kPointwiseSlices = 8;

template <typename T>
void weight_grad_pointwise(const Conv2dShape& s, const T* x, const T* dy, T* dw) {
  const int64_t C = s.C, K = s.K, P = s.Ho * s.Wo;
  const IsaKernels& isa = active_isa();  // one ISA for the whole call
  const MicroKernel<T> uk = IsaKernelsOf<T>::microkernel(isa);
  const TransposeFn<T> transpose = IsaKernelsOf<T>::transpose(isa);
  const int mr = uk.mr, nr = uk.nr;
  const int64_t KC = gemm_blocking(uk).kc;
  const int64_t m_pad = round_up(C, mr), k_pad = round_up(K, nr);
  // Blocks of fewer columns where there would be fewer blocks than threads (48 output
  // channels were one block of 64, on one thread; in blocks of 32, 16,24,40,40 -> 48
  // 1.86x, float64 1.48x); each column's sums are the same either way. A single column
  // panel (at most NR output channels) is split over the images instead, into slices that
  // depend on the shape only, each summed into its own dW^T, added in order at the end
  // (16,64,28,28 -> 32 and 8,32,56,56 -> 16: 1.84-1.9x, float64 1.9x).
  const int64_t panels = k_pad / nr;
  const int64_t slices = panels >= 2 ? 1 : std::clamp<int64_t>(s.N, 1, kPointwiseSlices);
  const int wanted =
      threads_for(2.0 * s.N * P * m_pad * k_pad, kMinFlopsPerThread, panels * slices);
  const int64_t block =
      std::min(round_up(kPointwiseColumns, nr), round_up(ceil_div(k_pad, wanted), nr));
  const int64_t blocks = ceil_div(k_pad, block), part = m_pad * k_pad;
  const int nthreads = std::min<int>(wanted, static_cast<int>(blocks * slices));
  T* dwt = thread_scratch<T>(kScratchPartials, slices * part);
  T* b_panels = thread_scratch<T>(kScratchPackedB, nthreads * block * KC);
  parallel_for(blocks * slices, nthreads, [&](int64_t task, int thread) {
    const int64_t slice = task / blocks, j_begin = task % blocks * block,
                  j_end = std::min(k_pad, j_begin + block);
    const int64_t n_begin = s.N * slice / slices, n_end = s.N * (slice + 1) / slices;
    T* b = b_panels + thread * block * KC;
    T* out = dwt + slice * part;
    for (int64_t n = n_begin; n < n_end; ++n) {
      const T* xn = x + n * C * P;
      const T* dyn = dy + n * K * P;
      for (int64_t p0 = 0; p0 < P; p0 += KC) {
        const int64_t kc = std::min(KC, P - p0);
        const bool accumulate = n > n_begin || p0 > 0;
        for (int64_t j = j_begin; j < j_end; j += nr) {
          T* panel = b + (j - j_begin) * KC;  // panel[k*nr + l] = dy[j + l][p0 + k]
          const int64_t cols = std::min<int64_t>(nr, K - j);
          transpose(dyn + j * P + p0, P, cols, kc, panel, nr);
          if (cols < nr)
            for (int64_t k = 0; k < kc; ++k)
              std::fill(panel + k * nr + cols, panel + (k + 1) * nr, T(0));
          for (int64_t i0 = 0; i0 < m_pad; i0 += mr) {
            const T* a_rows[8];  // mr <= 8; rows past C repeat the last (discarded)
            for (int i = 0; i < mr; ++i)
              a_rows[i] = xn + std::min<int64_t>(i0 + i, C - 1) * P + p0;
            uk.indirect_a(kc, a_rows, panel, out + i0 * k_pad + j, k_pad, accumulate);
          }
        }
      }
    }
  });
  for (int64_t slice = 1; slice < slices; ++slice)
    for (int64_t i = 0; i < part; ++i) dwt[i] += dwt[slice * part + i];
  transpose(dwt, k_pad, C, K, dw, C);  // dw[k][c] = dW^T[c][k]
}

// A dilated stride-1 layer whose padding and image are whole multiples of the dilation
// (dh, dw) is dh*dw undilated correlations, one per phase (a, b) of the rows and columns:
//   x_ab[c][i][j] = x[c][i*dh + a][j*dw + b],  y_ab likewise,
//   y_ab = conv(x_ab, w, padding (pad_h/dh, pad_w/dw), dilation 1),
// so the phases of every image, batched as images n*dh*dw + a*dw + b, take the undilated
// layer's best path: Winograd for 3x3. The gradients split the same way (dW sums over the
// phases as over the images; the weight gradient reads the phases in place, see
// winograd_weight_grad). Only where the undilated layer runs Winograd. Measured against
// the channels-last dilated path on the suite's dilated layer (bench/ab.py, both orders):
// forward and input grad 1.26-1.31x, weight grad 1.36-1.43x on AVX-512, 1.31-1.59x on AVX2,
// 1.16-1.24x in float64, 1.28-1.41x at 1 thread.
inline bool dilation_phases_preferred(const Conv2dShape& s, Conv2dShape* sub) {
  const int64_t dh = s.dil_h, dw = s.dil_w;
  if (s.groups != 1 || s.stride_h != 1 || s.stride_w != 1 || dh * dw == 1 || s.N == 0 ||
      s.pad_h % dh != 0 || s.pad_w % dw != 0 || s.H % dh != 0 || s.W % dw != 0)
    return false;
  *sub = {s.N * dh * dw, s.C, s.H / dh, s.W / dw, s.K,   s.R,          s.S,          s.Ho / dh,
          s.Wo / dw,     1,   1,        s.pad_h / dh, s.pad_w / dw, 1, 1, 1};
  return winograd_preferred(*sub);
}

// Images [n0, n0 + nb) of `full` (N x planes x H x W) to or from their phases in `phases`
// (nb*dh*dw x planes x H/dh x W/dw, image (n - n0)*dh*dw + a*dw + b), by plane in parallel.
// Row by row: each row of the plane is read (or written) once, its columns dealt to the dw
// phase rows; dilation 2 has its own loop, which the compiler vectorises.
template <typename T>
void dilation_phases_copy(T* full, int64_t n0, int64_t nb, int64_t planes, int64_t H, int64_t W,
                          int64_t dh, int64_t dw, T* phases, bool to_phases) {
  const int64_t Hs = H / dh, Ws = W / dw, tasks = nb * planes;
  const int64_t phase_stride = planes * Hs * Ws;  // from phase (a, b) to (a, b + 1)
  parallel_for(tasks, threads_for(double(tasks) * H * W, 1e5, tasks), [&](int64_t task, int) {
    const int64_t nl = task / planes, c = task % planes;
    T* plane = full + ((n0 + nl) * planes + c) * H * W;
    for (int64_t a = 0; a < dh; ++a) {
      T* sub = phases + ((nl * dh + a) * dw * planes + c) * Hs * Ws;  // phase (a, 0)
      for (int64_t i = 0; i < Hs; ++i) {
        T* row = plane + (i * dh + a) * W;
        T* s0 = sub + i * Ws;
        if (dw == 2) {
          T* s1 = s0 + phase_stride;
          if (to_phases)
            for (int64_t j = 0; j < Ws; ++j) {
              s0[j] = row[2 * j];
              s1[j] = row[2 * j + 1];
            }
          else
            for (int64_t j = 0; j < Ws; ++j) {
              row[2 * j] = s0[j];
              row[2 * j + 1] = s1[j];
            }
          continue;
        }
        for (int64_t j = 0; j < Ws; ++j)
          for (int64_t b = 0; b < dw; ++b) {
            if (to_phases)
              s0[b * phase_stride + j] = row[j * dw + b];
            else
              row[j * dw + b] = s0[b * phase_stride + j];
          }
      }
    }
  });
}

// Runs pass(part, in_phases, out_phases) on batch chunks of the phases of `in` (in_planes
// per image, H x W), whose own extra memory stays bounded (64 MiB, or the input's size), and
// merges out_phases into `out` (out_planes, Ho x Wo) when out is not null.
template <typename T, typename Pass>
void over_dilation_phases(const Conv2dShape& s, const Conv2dShape& sub, const T* in,
                          int64_t in_planes, int64_t H, int64_t W, T* out, int64_t out_planes,
                          int64_t Ho, int64_t Wo, const Pass& pass) {
  const int64_t d = s.dil_h * s.dil_w;
  const int64_t per_image = in_planes * H * W + (out ? out_planes * Ho * Wo : 0);
  const int64_t bound = std::max<int64_t>(64 << 20, s.N * in_planes * H * W * int64_t(sizeof(T)));
  const int64_t chunk =
      std::clamp<int64_t>(bound / std::max<int64_t>(per_image * int64_t(sizeof(T)), 1), 1, s.N);
  T* in_phases = thread_scratch<T>(kScratchPhases, chunk * per_image);
  T* out_phases = in_phases + chunk * in_planes * H * W;
  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.N - n0);
    Conv2dShape part = sub;
    part.N = nb * d;
    dilation_phases_copy(const_cast<T*>(in), n0, nb, in_planes, H, W, s.dil_h, s.dil_w,
                         in_phases, true);
    pass(part, in_phases, out_phases);
    if (out)
      dilation_phases_copy(out, n0, nb, out_planes, Ho, Wo, s.dil_h, s.dil_w, out_phases, false);
  }
}

// Ungrouped 1x1 layers (stride 1, no padding), forward pass and input gradient: per image the
// matrix product
//   out_n (M x P) = A (M x Kr) * in_n (Kr x P),  A[i][k] = a[i*a_row + k*a_col]
// (forward: A = W, M = K, Kr = C; input gradient: A = W^T, M = C, Kr = K), with A packed once
// per call for all images (pack_group_weights) and, per task (image, block of output columns),
// each block of in_n packed once (gemm) for all of A's row panels: the NCHW path's panels,
// read in place, take their columns from Kr rows one plane apart (128 rows 3 KiB apart span
// more pages than the L1 TLB holds) for every tile of A again, and matmul per image repacked
// B for every 96 rows of A. out starts as the bias (one value per row) where there is one.
template <typename T>
void pointwise_gemm(const MicroKernel<T>& uk, int64_t N, int64_t M, int64_t Kr, int64_t P,
                    const T* a, int64_t a_row, int64_t a_col, const T* in, const T* bias,
                    T* out) {
  const GemmBlocking blk = gemm_blocking(uk);
  const int64_t m_pad = round_up(M, uk.mr);
  int64_t a_size;
  const T* a_packed = pack_group_weights(a, 1, M, Kr, a_row, a_col, blk, uk.mr, &a_size);
  // Tasks: (image, block of output columns), whole images where the batch feeds the threads.
  const int64_t block_cols =
      std::min(round_up(ceil_div(P, ceil_div(4 * get_num_threads(), N)), uk.nr), blk.nc);
  const int64_t col_blocks = ceil_div(P, block_cols);
  const int nthreads = threads_for(2.0 * N * M * P * Kr, kMinFlopsPerThread, N * col_blocks);
  const int64_t b_size = gemm_b_block_size(uk, blk);
  T* b_scratch = thread_scratch<T>(kScratchPackedB, nthreads * b_size);
  parallel_for(N * col_blocks, nthreads, [&](int64_t task, int thread) {
    const int64_t n = task / col_blocks, p0 = (task % col_blocks) * block_cols;
    const int64_t nc = std::min(block_cols, P - p0);
    const T* in_n = in + n * Kr * P;
    T* out_n = out + n * M * P + p0;
    if (bias)
      for (int64_t i = 0; i < M; ++i) std::fill(out_n + i * P, out_n + i * P + nc, bias[i]);
    gemm(
        uk, blk, M, nc, Kr, [&](int64_t pc, int64_t) { return a_packed + pc * m_pad; },
        [&](int64_t pc, int64_t kc, int64_t jc, int64_t ncb, T* dst) {
          pack_b_strided(in_n, P, 1, pc, kc, p0 + jc, ncb, uk.nr, dst);
        },
        out_n, P, bias != nullptr, b_scratch + thread * b_size);
  });
}

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  if (s.N > 0 && s.K > 0 && plane_taps_preferred<T>(s, true))
    return forward_plane_taps(s, x, w, bias, y);
  if (depthwise_preferred(s)) return depthwise_forward(s, x, w, bias, y);
  if (Conv2dShape sub; dilation_phases_preferred(s, &sub))
    return over_dilation_phases(s, sub, x, s.C, s.H, s.W, y, s.K, s.Ho, s.Wo,
                                [&](const Conv2dShape& part, const T* xs, T* ys) {
                                  conv2d_forward(part, xs, w, bias, ys);
                                });
  if (winograd_preferred(s) && all_finite(w, s.K * s.C * 9, w, 0) &&
      winograd_forward(s, x, w, bias, y))
    return;  // else a non-finite output: the GEMM below rewrites y
  const int64_t G = s.groups, Cg = s.C / G, Kg = s.K / G, CRS = Cg * s.R * s.S;
  const int64_t P = s.Ho * s.Wo, HW = s.H * s.W;
  if (s.N == 0 || s.K == 0 || P == 0) return;
  const MicroKernel<T> isa_uk = active_microkernel<T>();  // one ISA for the whole call
  if (parity_planes_preferred(s, isa_uk.nr)) return forward_parity_planes(s, isa_uk, x, w, bias, y);
  // Stacked rows too where the NCHW panels would be gathered (measured: a 3-channel 5x5
  // stride-2 layer 1.4 -> 1.05 ms; at stride 1, cifar_c1's in-place panels stay faster).
  // The channels-last GEMMs' columns are the K output channels.
  const MicroKernel<T> uk_cl = fitted_microkernel(isa_uk, s.K);
  if (stacked_rows_preferred(s) && 2 * s.K >= uk_cl.nr && forward_panels_gathered(s, uk_cl.nr)) {
    const int64_t RS = s.R * s.S;
    T* w2 = thread_scratch<T>(kScratchPartials, s.K * s.C * RS);
    for (int64_t k = 0; k < s.K; ++k)  // w2[k][r*C + c][0][t] = w[k][c][r][t]
      for (int64_t c = 0; c < s.C; ++c)
        for (int64_t r = 0; r < s.R; ++r)
          for (int64_t t = 0; t < s.S; ++t)
            w2[((k * s.R + r) * s.C + c) * s.S + t] = w[((k * s.C + c) * s.R + r) * s.S + t];
    const Conv2dShape s2 = stacked_rows_shape(s);
    return forward_channels_last(s2, uk_cl, x, w2, bias, y, &s);
  }
  if (forward_channels_last_preferred(s, uk_cl.nr))
    return forward_channels_last(s, uk_cl, x, w, bias, y);
  if (G == 1 && column_matrix_is_input(s))
    return pointwise_gemm(isa_uk, s.N, s.K, s.C, P, w, s.C, 1, x, bias, y);
  // Output rows of 16 with AVX-512's panels of 32: every panel spans two rows and is gathered,
  // where AVX2's panels of 16 are read in place (bench/ab.py: 64,6,20,20 -> 16, 5x5 2.56x).
  const MicroKernel<T> uk = in_place_fitted_microkernel(isa_uk, s);
  const GemmBlocking blk = gemm_blocking(uk);

  // Stride-1 panels within an output row are read in place, except where the window hangs
  // over the padding (those rows are gathered, several times slower than the FMAs they feed):
  // with a zero-padded copy of the images, every such row is an in-bounds run.
  const bool pad_copy = s.stride_w == 1 && s.Wo >= uk.nr && (s.pad_h > 0 || s.pad_w > 0);
  Conv2dShape sp = s;
  if (pad_copy) {
    const WindowLayout layout(s);
    sp.H = layout.Hp;
    sp.W = layout.Wp;
    sp.pad_h = sp.pad_w = 0;
  }
  const Im2col geo(sp);
  const int64_t HWs = sp.H * sp.W;  // plane size of the images the panels read
  // Images per pass: the padded copies within 64 MiB (at least one image).
  const int64_t chunk =
      pad_copy ? std::clamp<int64_t>((64 << 20) / std::max<int64_t>(s.C * HWs * sizeof(T), 1),
                                     1, s.N)
               : s.N;
  T* padded = pad_copy ? thread_scratch<T>(kScratchStacked, chunk * s.C * HWs) : nullptr;

  // A = each group's weights, a Kg x CRS matrix.
  const int64_t m_pad = round_up(Kg, uk.mr);
  int64_t a_size;
  const T* a_packed = pack_group_weights(w, G, Kg, CRS, CRS, 1, blk, uk.mr, &a_size);

  // Tasks: (image, group, block of output columns). B is read in place, so a block need not
  // fit any cache: whole images where the batch feeds the threads, else split for 4 tasks a
  // thread. (With blocks of NC columns, the threads took neighbouring pieces of the same
  // images: cifar_c1 ran 1.5-1.7x slower at 2 threads, in float32 and float64, AVX2 and
  // AVX-512; the same at 1 thread.)
  const int64_t block_split = ceil_div(4 * get_num_threads(), chunk * G);
  const int64_t block_cols = round_up(ceil_div(P, block_split), uk.nr);
  const int64_t col_blocks = ceil_div(P, block_cols);
  const int64_t tasks = chunk * G * col_blocks;
  const int nthreads = threads_for(2.0 * chunk * s.K * P * CRS, kMinFlopsPerThread, tasks);
  // Per thread: one panel of packed rows (kc x nr) and its kc row pointers.
  const int64_t panel_size = blk.kc * uk.nr;
  T* panel_scratch = thread_scratch<T>(kScratchPackedB, nthreads * panel_size);
  const T** pointer_scratch = thread_scratch<const T*>(kScratchColumns, nthreads * blk.kc);

  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.N - n0);
    if (pad_copy) {
      parallel_for(nb * s.C, threads_for(double(nb) * s.C * HWs, 1e5, nb * s.C),
                   [&](int64_t plane, int) {
                     const T* src = x + (n0 * s.C + plane) * HW;
                     T* dst = padded + plane * HWs;
                     const int64_t first = std::min(s.pad_w, sp.W);
                     const int64_t last = std::clamp<int64_t>(s.W + s.pad_w, first, sp.W);
                     for (int64_t i = 0; i < sp.H; ++i) {
                       T* row = dst + i * sp.W;
                       const int64_t ih = i - s.pad_h;
                       if (!inside(ih, s.H)) {
                         std::fill(row, row + sp.W, T(0));
                         continue;
                       }
                       std::fill(row, row + first, T(0));
                       std::copy(src + ih * s.W, src + ih * s.W + (last - first), row + first);
                       std::fill(row + last, row + sp.W, T(0));
                     }
                   });
    }
    const T* images = pad_copy ? padded : x + n0 * s.C * HW;
    parallel_for(nb * G * col_blocks, nthreads, [&](int64_t task, int thread) {
      const int64_t pb = task % col_blocks, g = (task / col_blocks) % G;
      const int64_t nl = task / (col_blocks * G), n = n0 + nl;
      const int64_t p0 = pb * block_cols, nc = std::min(block_cols, P - p0);
      const T* xg = images + (nl * s.C + g * Cg) * HWs;
      const T* ag = a_packed + g * a_size;
      T* yg = y + (n * s.K + g * Kg) * P;
      gemm_rows(
          uk, blk, Kg, nc, CRS, [&](int64_t pc, int64_t) { return ag + pc * m_pad; },
          [&](int64_t pc, int64_t kc, int64_t j0, int64_t cols, T* panel, const T** rows) {
            im2col_row_pointers(geo, xg, pc, kc, p0 + j0, cols, uk.nr, panel, rows);
          },
          yg + p0, P, false, panel_scratch + thread * panel_size,
          pointer_scratch + thread * blk.kc);
      if (bias) {
        for (int64_t m = 0; m < Kg; ++m) {
          const T b = bias[g * Kg + m];
          T* row = yg + m * P + p0;
          for (int64_t j = 0; j < nc; ++j) row[j] += b;
        }
      }
    });
  }
}

template <typename T>
void conv2d_input_grad(const Conv2dShape& s, const T* w, const T* dy, const T* bias, T* dx) {
  if (depthwise_preferred(s)) return depthwise_input_grad(s, w, dy, bias, dx);
  if (Conv2dShape sub; dilation_phases_preferred(s, &sub))
    return over_dilation_phases(s, sub, dy, s.K, s.Ho, s.Wo, dx, s.C, s.H, s.W,
                                [&](const Conv2dShape& part, const T* dys, T* dxs) {
                                  conv2d_input_grad(part, w, dys, bias, dxs);
                                });
  if (winograd_preferred(s) && all_finite(w, s.K * s.C * 9, w, 0) &&
      winograd_input_grad(s, w, dy, bias, dx))
    return;  // else a non-finite output: the GEMM below rewrites dx
  const int64_t G = s.groups, Cg = s.C / G, Kg = s.K / G, RS = s.R * s.S, CRS = Cg * RS;
  const int64_t P = s.Ho * s.Wo, HW = s.H * s.W;
  if (s.N == 0 || s.C == 0 || HW == 0) return;
  const MicroKernel<T> uk = active_microkernel<T>();
  if (G == 1 && column_matrix_is_input(s))  // dx_n = W^T dy_n
    return pointwise_gemm(uk, s.N, s.C, s.K, P, w, 1, s.C, dy, bias, dx);
  // Stride 1: dx is the correlation of dy with the flipped, transposed weights and padding
  // dil*(R-1) - pad, which the channels-last forward computes where it is the faster path.
  const int64_t flip_pad_h = s.dil_h * (s.R - 1) - s.pad_h, flip_pad_w = s.dil_w * (s.S - 1) - s.pad_w;
  if (s.groups == 1 && s.stride_h == 1 && s.stride_w == 1 && flip_pad_h >= 0 && flip_pad_w >= 0) {
    const Conv2dShape t = {s.N, s.K, s.Ho, s.Wo, s.C, s.R, s.S, s.H, s.W, 1, 1,
                           flip_pad_h, flip_pad_w, s.dil_h, s.dil_w, 1};
    const MicroKernel<T> uk_cl = fitted_microkernel(uk, t.K);  // columns: dx's C channels
    // Few-channel layers (plane_taps_preferred, rows of dx as long), and layers whose flipped
    // layer's forward pass takes the plane loops (to at most kPlaneTapsMaxOutputs planes of
    // dx, or from few planes of dy) and whose padding is at least the flipped layer's (no
    // more of dy's taps in its padding than of x's: 5x5 unpadded layers, 4 rows and columns
    // of padding on 10-20, ran 0.74-0.91x): dx's planes from rows_taps over all K*R*S taps
    // of the padded dy (bench/ab.py, 2 threads: 32,8,32,32 -> 16 3x3 1.40x, float64 1.41x,
    // AVX2 1.3-1.37x; 12 channels 16x16 1.15-1.27x; 8 channels 28x28 5x5 1.11-1.35x; to 2
    // or 3 output channels, 8,64,64,64 -> 3 3x3 and 16,32,32,32 -> 2 5x5, 4.0-5.6x, float64
    // too; on the baseline 0.9x and 1.45x).
    const bool plane_taps = (plane_taps_preferred<T>(s) && s.W >= s.Wo) ||
                            (plane_taps_preferred<T>(t, true) && t.pad_h <= s.pad_h &&
                             t.pad_w <= s.pad_w);
    if (s.K > 0 && (plane_taps || forward_channels_last_preferred(t, uk_cl.nr, true))) {
      const int64_t RS = s.R * s.S;
      T* flipped = thread_scratch<T>(kScratchPartials, s.C * s.K * RS);
      for (int64_t c = 0; c < s.C; ++c)  // flipped[c][k][r][s] = w[k][c][R-1-r][S-1-s]
        for (int64_t k = 0; k < s.K; ++k)
          for (int64_t i = 0; i < RS; ++i)
            flipped[(c * s.K + k) * RS + i] = w[(k * s.C + c) * RS + RS - 1 - i];
      if (plane_taps) return forward_plane_taps(t, dy, flipped, bias, dx);
      return forward_channels_last(t, uk_cl, dy, flipped, bias, dx);
    }
  }
  if (s.K > 0 && phase_taps_input_grad_preferred<T>(s) && all_finite(w, s.K * CRS, w, 0) &&
      input_grad_phase_taps(s, w, dy, bias, dx))
    return;  // not with non-finite weights: the padding's 0 * inf would be NaN
  const GemmBlocking blk = gemm_blocking(uk);
  const Im2col geo(s);
  const PlaneKernels<T> planes_isa = active_plane_kernels<T>();
  // dx's plane of one channel from its rows of the column gradient: stride 1, where the
  // thread has just computed them (image by image), summed in registers by col2im_rows
  // where the ISA has it (a chunk's column gradient, written by other tasks, read that way
  // from L3, 25 rows at once, ran 0.89-0.95x: 64,6,20,20 -> 16 5x5 in float64); else
  // scattered, stride 2 in pairs of taps.
  const bool rows = planes_isa.col2im_rows != nullptr && s.stride_h == 1 && s.stride_w == 1 &&
                    s.S <= kCol2imRowsMaxS;
  const PlaneGeometry rows_geometry = {s.H,     s.W,     s.Ho,    s.Wo,    s.R,     s.S,
                                       1,       1,       s.pad_h, s.pad_w, s.dil_h, s.dil_w,
                                       nullptr, nullptr, nullptr};
  const bool pairs = geo.sw == 2 && geo.dw == 1 && geo.S > 1;  // col2im_plane_pairs applies
  // The output rows [h0, h0 + band) of the column gradient (col: R*S rows of band*Wo each)
  // into the plane: onto its values where accumulating, else onto init.
  auto col2im = [&](const T* col, T init, T* plane, int64_t h0, int64_t band, bool accumulate,
                    bool own_rows) {
    if (rows && own_rows) {
      // dx rows [ih_begin, ih_end) meet the band; ho = ih + pad_h - r*dil_h - h0 in it.
      const int64_t ih_begin = std::max<int64_t>(0, h0 - s.pad_h);
      const int64_t ih_end = std::min(s.H, h0 + band - s.pad_h + (s.R - 1) * s.dil_h);
      if (ih_begin >= ih_end) return;
      PlaneGeometry g = rows_geometry;
      g.H = ih_end - ih_begin, g.Ho = band, g.pad_h = ih_begin + s.pad_h - h0;
      return planes_isa.col2im_rows(g, col, init, plane + ih_begin * s.W, accumulate);
    }
    Im2col g = geo;
    g.Ho = band, g.ph = geo.ph - h0 * geo.sh;
    if (pairs)
      col2im_plane_pairs(g, col, init, plane, accumulate);
    else
      col2im_plane(g, col, init, plane, accumulate);
  };

  // A = each group's weights transposed: A[q][k] = w[g*Kg + k][q], a CRS x Kg matrix.
  const int64_t m_pad = round_up(CRS, uk.mr);
  int64_t a_size;
  const T* a_packed = pack_group_weights(w, G, CRS, Kg, 1, CRS, blk, uk.mr, &a_size);

  // Grouped 1x1, stride 1, no padding (ungrouped ones went to pointwise_gemm): the column
  // gradient is dx itself (col2im would be a copy), so the GEMM writes into dx, onto the bias
  // where there is one.
  const bool direct = column_matrix_is_input(s);
  const int64_t per_image = s.C * RS * P;  // column gradient of one image, all groups
  const int64_t b_size = gemm_b_block_size(uk, blk);
  // Batches of images up to a few MiB of column gradient each: a task is one image, whose
  // column gradient goes to the thread's own scratch and is scattered into dx at once, while
  // it is still in L2 or at least L3 (through the shared scratch of a chunk of images, 4 MiB,
  // the GEMM's stores and col2im's loads both went through L3; measured: cifar_c1 1.1-1.2x,
  // LeNet's second layer 1.0-1.1x; raising the limit from 256 KiB to 4 MiB, bench/ab.py both
  // orders, 2 threads: 32,8,32,32 -> 16 3x3 1.56-1.81x, float64 1.72-1.8x; 32,16,28,28 -> 32
  // 5x5 1.19-1.3x, float64 1.24-1.45x; strided layers 0.95-1.09x, at 1 thread 0.98-1.04x).
  const int image_threads = threads_for(2.0 * s.N * s.K * P * CRS, kMinFlopsPerThread, s.N);
  // Larger images in bands of output rows whose column gradient takes at most
  // kImageColumnBytes, one image's bands one after another on its task's thread, each
  // scattered into dx's planes (set to the bias first) at once (against the chunks of whole
  // images below: 8,32,56,56 -> 8 float64, 7.2 MB an image, 1.7-1.75x; 8,64,56,56 -> 16
  // 5x5 1.29-1.32x, float64 1.66-1.73x; bands of 512 KiB, to stay in L2, were slower: at
  // most 1.0x, and 0.87x where a band was one row).
  const int64_t row_bytes = s.C * RS * s.Wo * static_cast<int64_t>(sizeof(T));
  const int64_t band_rows = std::max<int64_t>(
      1, std::min<int64_t>(s.Ho, kImageColumnBytes / std::max<int64_t>(1, row_bytes)));
  const int64_t band_size = s.C * RS * band_rows * s.Wo;
  const int64_t band_bytes = band_size * static_cast<int64_t>(sizeof(T));
  if (!direct && band_bytes <= kImageColumnBytes &&
      image_threads * band_bytes <= kImageColumnsTotalBytes && s.N >= 4 * image_threads) {
    T* cols = thread_scratch<T>(kScratchColumns, image_threads * band_size);
    T* b_scratch = thread_scratch<T>(kScratchPackedB, image_threads * b_size);
    const bool banded = band_rows < s.Ho;
    parallel_for(s.N, image_threads, [&](int64_t n, int thread) {
      T* col = cols + thread * band_size;
      T* dxn = dx + n * s.C * HW;
      if (banded)
        for (int64_t c = 0; c < s.C; ++c)
          std::fill(dxn + c * HW, dxn + (c + 1) * HW, bias ? bias[c] : T(0));
      for (int64_t h0 = 0; h0 < s.Ho; h0 += band_rows) {
        const int64_t band = std::min(band_rows, s.Ho - h0), bp = band * s.Wo;
        for (int64_t g = 0; g < G; ++g) {
          const T* dyg = dy + (n * s.K + g * Kg) * P;
          const T* ag = a_packed + g * a_size;
          gemm(
              uk, blk, CRS, bp, Kg, [&](int64_t pc, int64_t) { return ag + pc * m_pad; },
              [&](int64_t pc, int64_t kc, int64_t jc, int64_t ncb, T* dst) {
                pack_b_strided(dyg, P, 1, pc, kc, h0 * s.Wo + jc, ncb, uk.nr, dst);
              },
              col + g * CRS * bp, bp, false, b_scratch + thread * b_size);
        }
        for (int64_t c = 0; c < s.C; ++c)
          col2im(col + c * RS * bp, bias ? bias[c] : T(0), dxn + c * HW, h0, band, banded, true);
      }
    });
    return;
  }
  const int64_t chunk = direct ? s.N : std::clamp<int64_t>(
      kColumnScratchBytes / std::max<int64_t>(1, per_image * static_cast<int64_t>(sizeof(T))), 1,
      s.N);
  T* dcol = direct ? nullptr : thread_scratch<T>(kScratchColumns, chunk * per_image);
  const int64_t col_blocks = ceil_div(P, blk.nc);
  const int gemm_threads =
      threads_for(2.0 * chunk * s.K * P * CRS, kMinFlopsPerThread, chunk * G * col_blocks);
  const int col2im_threads = threads_for(double(chunk) * s.C * RS * P, kMinFlopsPerThread, chunk * s.C);
  T* b_scratch = thread_scratch<T>(kScratchPackedB, gemm_threads * b_size);

  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.N - n0);
    parallel_for(nb * G * col_blocks, gemm_threads, [&](int64_t task, int thread) {
      const int64_t pb = task % col_blocks, g = (task / col_blocks) % G, nl = task / (col_blocks * G);
      const int64_t p0 = pb * blk.nc, nc = std::min(blk.nc, P - p0);
      const T* dyg = dy + ((n0 + nl) * s.K + g * Kg) * P;
      const T* ag = a_packed + g * a_size;
      T* colg = direct ? dx + ((n0 + nl) * s.C + g * Cg) * HW : dcol + (nl * G + g) * CRS * P;
      if (direct && bias)
        for (int64_t c = 0; c < Cg; ++c)
          std::fill(colg + c * P + p0, colg + c * P + p0 + nc, bias[g * Cg + c]);
      gemm(
          uk, blk, CRS, nc, Kg, [&](int64_t pc, int64_t) { return ag + pc * m_pad; },
          [&](int64_t pc, int64_t kc, int64_t jc, int64_t ncb, T* dst) {
            pack_b_strided(dyg, P, 1, pc, kc, p0 + jc, ncb, uk.nr, dst);
          },
          colg + p0, P, direct && bias, b_scratch + thread * b_size);
    });
    if (direct) continue;
    parallel_for(nb * s.C, col2im_threads, [&](int64_t task, int) {
      const int64_t nl = task / s.C, c = task % s.C, g = c / Cg, cl = c % Cg;
      const T* col = dcol + ((nl * G + g) * CRS + cl * RS) * P;
      col2im(col, bias ? bias[c] : T(0), dx + ((n0 + nl) * s.C + c) * HW, 0, s.Ho, false,
             false);
    });
  }
}

// An ungrouped layer of one input channel (a first layer on grey images) whose weight gradient
// runs faster with its window rows stacked on the channels-last path than plane by plane:
// stride 2, or a window filling most of the micro-kernel's columns (5x5: 25 of 32, 7x7: 49 of
// 64), with enough output channels for its rows (measured at 2 threads on AVX-512: LeNet's
// first layer 1.26x, a 7x7 one 1.5x, 5x5 stride 2 8x; 3x3 windows or one output channel run
// 2-4x faster plane by plane).
template <typename T>
bool channels_last_weight_grad_of_one_channel(const Conv2dShape& s) {
  if (s.groups != 1 || s.C != 1 || s.K < 4) return false;
  const int64_t taps = s.R * s.S, nr = IsaKernelsOf<T>::microkernel(active_isa()).nr;
  return s.stride_h > 1 || s.stride_w > 1 || 4 * taps >= 3 * round_up(taps, nr);
}

template <typename T>
void conv2d_weight_grad(const Conv2dShape& s, const T* x, const T* dy, T* dw) {
  if (depthwise_preferred(s) && !channels_last_weight_grad_of_one_channel<T>(s))
    return depthwise_weight_grad(s, x, dy, dw);
  const int64_t G = s.groups, Cg = s.C / G, Kg = s.K / G, CRS = Cg * s.R * s.S;
  const int64_t P = s.Ho * s.Wo, HW = s.H * s.W;
  const int64_t group_size = Kg * CRS;  // elements of dW per group
  if (s.K == 0 || CRS == 0) return;
  const int64_t L = s.N * P;  // reduction length: every output position of every image
  if (L == 0) {
    std::fill(dw, dw + G * group_size, T(0));
    return;
  }
  // Dilated layers whose phases take Winograd: the phases are read in place from the tasks'
  // copies of x and dy (winograd_weight_grad_tiles); a non-finite input continues to the
  // GEMM path below.
  if (Conv2dShape sub; dilation_phases_preferred(s, &sub) && winograd_weight_grad(s, x, dy, dw))
    return;
  if (winograd_preferred(s) && winograd_weight_grad(s, x, dy, dw)) return;
  if (phase_planes_weight_grad_preferred(s)) return weight_grad_phase_planes(s, x, dy, dw);
  if (plane_taps_preferred<T>(s) && weight_grad_plane_dots(s, x, dy, dw)) return;
  if (stacked_rows_weight_grad_preferred<T>(s)) {  // measured: cifar_c1 1.5 -> 1.15 ms
    const int64_t RS = s.R * s.S;
    T* dw2 = thread_scratch<T>(kScratchStacked, s.K * s.C * RS);
    weight_grad_channels_last(stacked_rows_shape(s), x, dy, dw2, &s);
    for (int64_t k = 0; k < s.K; ++k)  // dw[k][c][r][t] = dw2[k][r*C + c][0][t]
      for (int64_t c = 0; c < s.C; ++c)
        for (int64_t r = 0; r < s.R; ++r)
          for (int64_t t = 0; t < s.S; ++t)
            dw[((k * s.C + c) * s.R + r) * s.S + t] = dw2[((k * s.R + r) * s.C + c) * s.S + t];
    return;
  }
  if (s.groups == 1 && column_matrix_is_input(s)) return weight_grad_pointwise(s, x, dy, dw);
  if (s.groups == 1) return weight_grad_channels_last(s, x, dy, dw);
  const MicroKernel<T> uk = active_microkernel<T>();
  const GemmBlocking blk = gemm_blocking(uk);
  const Im2col geo(s);

  // Few groups: also split the reduction, so that batch 1 or a single group uses every thread.
  const int nthreads = threads_for(2.0 * s.N * s.K * P * CRS, kMinFlopsPerThread, G * L);
  const int64_t splits = std::min<int64_t>(G >= nthreads ? 1 : ceil_div(nthreads, G), L);
  const int64_t tasks = G * splits;
  T* partial = thread_scratch<T>(kScratchPartials, splits > 1 ? tasks * group_size : 0);
  const int64_t a_size = round_up(Kg, uk.mr) * blk.kc;
  const int64_t b_size = gemm_b_block_size(uk, blk);
  T* a_scratch = thread_scratch<T>(kScratchPackedA, nthreads * a_size);
  T* b_scratch = thread_scratch<T>(kScratchPackedB, nthreads * b_size);
  const int64_t rows_size = uk.nr * blk.kc;  // one panel's rows of col, before transposing
  T* rows_scratch = thread_scratch<T>(kScratchColumns, nthreads * rows_size);

  parallel_for(tasks, nthreads, [&](int64_t task, int thread) {
    const int64_t g = task / splits, split = task % splits;
    T* out = splits > 1 ? partial + task * group_size : dw + g * group_size;
    T* abuf = a_scratch + thread * a_size;
    const int64_t q_end = L * (split + 1) / splits;
    bool first = true;
    for (int64_t q = L * split / splits; q < q_end;) {
      const int64_t n = q / P, p0 = q % P, len = std::min(q_end - q, P - p0);
      const T* xg = x + (n * s.C + g * Cg) * HW;
      const T* dyg = dy + (n * s.K + g * Kg) * P;
      gemm(
          uk, blk, Kg, CRS, len,
          [&](int64_t pc, int64_t kc) {
            pack_a_block(dyg, P, 1, Kg, p0 + pc, kc, uk.mr, abuf);
            return static_cast<const T*>(abuf);
          },
          [&](int64_t pc, int64_t kc, int64_t jc, int64_t ncb, T* dst) {
            pack_im2col_transposed(geo, xg, p0 + pc, kc, jc, ncb, uk.nr,
                                   rows_scratch + thread * rows_size, dst);
          },
          out, CRS, !first, b_scratch + thread * b_size);
      first = false;
      q += len;
    }
    if (first) std::fill(out, out + group_size, T(0));
  });

  if (splits > 1) {
    // Partial sums added in split order: the result depends on the thread count only.
    const int64_t total = G * group_size;
    const int64_t block = 4096;
    parallel_for(ceil_div(total, block), threads_for(double(total) * splits, 1e5, ceil_div(total, block)),
                 [&](int64_t b, int) {
                   for (int64_t i = b * block; i < std::min(total, (b + 1) * block); ++i) {
                     const int64_t g = i / group_size, e = i % group_size;
                     T sum = partial[(g * splits) * group_size + e];
                     for (int64_t sp = 1; sp < splits; ++sp)
                       sum += partial[(g * splits + sp) * group_size + e];
                     dw[i] = sum;
                   }
                 });
  }
}

// Tasks: blocks of consecutive channels, images outer, so that a task streams through runs
// of contiguous planes (one channel per task, images inner, jumped a batch stride after every
// plane); each channel still sums its images in order, so the result does not depend on the
// thread count. Each plane is summed in T over 8 interleaved partial sums (a loop the compiler
// vectorises without reassociating anything), the planes' sums in double: more accurate than
// one running sum, and memory-bound (NumPy's dy.sum((0, 2, 3)) took 0.39 ms on a 4 MiB float32
// gradient).
template <typename T>
void conv2d_bias_grad(int64_t N, int64_t K, int64_t P, const T* dy, T* db) {
  constexpr int64_t kMaxBlock = 64;
  const int nthreads = threads_for(double(N) * K * P, 1e5, K);
  const int64_t block = std::clamp<int64_t>(K / (4 * nthreads), 1, kMaxBlock);
  parallel_for(ceil_div(K, block), nthreads, [&](int64_t task, int) {
    const int64_t k_begin = task * block, k_end = std::min(K, k_begin + block);
    double totals[kMaxBlock] = {};
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = k_begin; k < k_end; ++k) {
        const T* plane = dy + (n * K + k) * P;
        T part[8] = {};
        int64_t i = 0;
        for (; i + 8 <= P; i += 8)
          for (int j = 0; j < 8; ++j) part[j] += plane[i + j];
        T tail = 0;
        for (; i < P; ++i) tail += plane[i];
        totals[k - k_begin] += double(((part[0] + part[1]) + (part[2] + part[3])) +
                                      ((part[4] + part[5]) + (part[6] + part[7]))) +
                               double(tail);
      }
    for (int64_t k = k_begin; k < k_end; ++k) db[k] = static_cast<T>(totals[k - k_begin]);
  });
}

#define FASTCONV_INSTANTIATE(T)                                                             \
  template void conv2d_bias_grad<T>(int64_t, int64_t, int64_t, const T*, T*);              \
  template void conv2d_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*);    \
  template void conv2d_input_grad<T>(const Conv2dShape&, const T*, const T*, const T*, T*); \
  template void conv2d_weight_grad<T>(const Conv2dShape&, const T*, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
