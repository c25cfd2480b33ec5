// Zero-padded channels-last copies of NCHW images, for the kernels that want a pixel's channels
// contiguous (the weight gradients). Portable code: not for the ISA files.
#pragma once

#include <algorithm>
#include <cstdint>

#include "microkernel.h"

namespace fastconv {

// Channels [0, C) of one padded pixel row of the copy of one image (C x H x W) into out,
// pixels `cstride` values apart, the pixels' other values untouched:
//   out[col*cstride + c] = image[c][ih][col - pad_w]   (0 outside the image; all 0 when ih is)
// for col < Wp. `transpose` is the ISA's (IsaKernels::transpose_*).
template <typename T>
void channels_last_segment(const T* image, int64_t C, int64_t H, int64_t W, int64_t ih,
                           int64_t pad_w, int64_t Wp, int64_t cstride, T* out,
                           TransposeFn<T> transpose) {
  const int64_t first = std::min(pad_w, Wp);                    // padded columns before the image
  const int64_t last = std::clamp<int64_t>(W + pad_w, first, Wp);  // end of the image's columns
  const auto zero_pixels = [&](int64_t begin, int64_t end) {
    for (int64_t col = begin; col < end; ++col)
      std::fill(out + col * cstride, out + col * cstride + C, T(0));
  };
  if (ih < 0 || ih >= H) {
    zero_pixels(0, Wp);
    return;
  }
  zero_pixels(0, first);
  zero_pixels(last, Wp);
  const T* src = image + ih * W - pad_w;  // src[col] for columns [first, last)
  if (C >= 8) {
    transpose(src + first, H * W, C, last - first, out + first * cstride, cstride);
    return;
  }
  // Fewer channels than a transpose block (stacked rows of 1-4 channels): pixel by pixel, so
  // that each pixel's few values are written together.
  const int64_t HW = H * W;
  for (int64_t col = first; col < last; ++col) {
    const T* p = src + col;
    T* d = out + col * cstride;
    for (int64_t c = 0; c < C; ++c) d[c] = p[c * HW];
  }
}

// Row `row` (padded coordinates) of the copy of one image (C x H x W) padded by pad_h rows on
// top and pad_w columns on the left, Wp columns wide, `cstride` >= C values per pixel:
//   out[col*cstride + c] = image[c][row - pad_h][col - pad_w]   (0 outside the image),
//   and 0 for C <= c < cstride.
template <typename T>
void channels_last_row(const T* image, int64_t C, int64_t H, int64_t W, int64_t pad_h,
                       int64_t pad_w, int64_t row, int64_t Wp, int64_t cstride, T* out,
                       TransposeFn<T> transpose) {
  if (cstride == C && (row < pad_h || row - pad_h >= H)) {  // one fill for a padding row
    std::fill(out, out + Wp * cstride, T(0));
    return;
  }
  channels_last_segment(image, C, H, W, row - pad_h, pad_w, Wp, cstride, out, transpose);
  if (cstride > C)
    for (int64_t col = 0; col < Wp; ++col)
      std::fill(out + col * cstride + C, out + (col + 1) * cstride, T(0));
}

}  // namespace fastconv
