// Zero-padded channels-last copies of NCHW images, for the kernels that want a pixel's channels
// contiguous (the weight gradients). Portable code: not for the ISA files.
#pragma once

#include <algorithm>
#include <cstdint>

#include "microkernel.h"

namespace fastconv {

// Row `row` (padded coordinates) of the copy of one image (C x H x W) padded by pad_h rows on
// top and pad_w columns on the left, Wp columns wide, `cstride` >= C values per pixel:
//   out[col*cstride + c] = image[c][row - pad_h][col - pad_w]   (0 outside the image),
//   and 0 for C <= c < cstride. `transpose` is the ISA's (IsaKernels::transpose_*).
template <typename T>
void channels_last_row(const T* image, int64_t C, int64_t H, int64_t W, int64_t pad_h,
                       int64_t pad_w, int64_t row, int64_t Wp, int64_t cstride, T* out,
                       TransposeFn<T> transpose) {
  const int64_t ih = row - pad_h;
  const int64_t first = std::min(pad_w, Wp);                    // padded columns before the image
  const int64_t last = std::clamp<int64_t>(W + pad_w, first, Wp);  // end of the image's columns
  if (ih < 0 || ih >= H) {
    std::fill(out, out + Wp * cstride, T(0));
    return;
  }
  std::fill(out, out + first * cstride, T(0));
  std::fill(out + last * cstride, out + Wp * cstride, T(0));
  const int64_t HW = H * W;
  const T* src = image + ih * W - pad_w;  // src[col] for columns [first, last)
  transpose(src + first, HW, C, last - first, out + first * cstride, cstride);
  if (cstride > C)
    for (int64_t col = first; col < last; ++col)
      std::fill(out + col * cstride + C, out + (col + 1) * cstride, T(0));
}

}  // namespace fastconv
