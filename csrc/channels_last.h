// Zero-padded channels-last copies of NCHW images, for the kernels that want a pixel's channels
// contiguous (the weight gradients). Portable code: not for the ISA files.
#pragma once

#include <algorithm>
#include <cstdint>

namespace fastconv {

// Row `row` (padded coordinates) of the copy of one image (C x H x W) padded by pad_h rows on
// top and pad_w columns on the left, Wp columns wide, `cstride` >= C values per pixel:
//   out[col*cstride + c] = image[c][row - pad_h][col - pad_w]   (0 outside the image),
//   and 0 for C <= c < cstride.
template <typename T>
void channels_last_row(const T* image, int64_t C, int64_t H, int64_t W, int64_t pad_h,
                       int64_t pad_w, int64_t row, int64_t Wp, int64_t cstride, T* out) {
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
  // Eight channels at a time: eight sequential read streams, one contiguous store per pixel.
  int64_t c0 = 0;
  for (; c0 + 8 <= C; c0 += 8) {
    const T* s0 = src + c0 * HW;
    for (int64_t col = first; col < last; ++col) {
      T* d = out + col * cstride + c0;
      for (int j = 0; j < 8; ++j) d[j] = s0[j * HW + col];
    }
  }
  for (int64_t c = c0; c < C; ++c)
    for (int64_t col = first; col < last; ++col) out[col * cstride + c] = src[c * HW + col];
  if (cstride > C)
    for (int64_t col = first; col < last; ++col)
      std::fill(out + col * cstride + C, out + (col + 1) * cstride, T(0));
}

}  // namespace fastconv
