// Winograd F(2x2, 3x3) input transform of one panel of 32 tiles, float, AVX-512F (compiled
// with -mavx512f; reached only through the AVX-512 dispatch table). Contract: input_panel in
// microkernel.h; the math and layouts: winograd.cpp. Same values as the portable transform of
// winograd_transforms.inc (the same additions in the same order).
//
// winograd_avx2.cpp's scheme on blocks of 16 lanes: per channel, block and patch row i, the
// columns (e0, e1, e2, e3) of the block's 16 tiles are the even and odd columns of two pairs
// of loads (columns 0..31 and 2..33 from the block's first column), one two-source permute
// each (AVX2 needs a shuffle and a permute per 8 lanes); d B of the row follows at once, and
// B^T (d B) is formed as the rows come. A block over the padding, at the end of the image's
// rows or holding tiles of two runs loads under masks only the columns its tiles need inside
// the image (masked-off lanes do not fault), then keeps only its own lanes of each run.
#include <immintrin.h>

#include <cstdint>

#include "microkernel.h"
#include "winograd_blocks.h"

namespace fastconv {
namespace {

constexpr int kLanes = 16;  // a block: one zmm of 16 tiles
constexpr int kNR = 32;     // the AVX-512 float micro-kernel's width: 2 blocks
constexpr int kMaxParts = kLanes;  // runs in one block: each holds at least one of its lanes
constexpr int64_t kAhead = 2;      // planes ahead prefetched (see winograd_avx2.cpp)

// One run's part of one block.
struct BlockPart {
  const WinogradTileRun* run;
  int64_t col0;         // image column of the block's lane 0 (as if the run covered it)
  bool plain;           // all 34 columns inside the image and the block's lanes all this run's
  int64_t first, last;  // the first and last column inside the image that the block reads
  __mmask16 loads[4];   // masks of the loads at column offsets 0, 16, 2, 18
  __mmask16 lanes;      // the block's lanes that are this run's
};

constexpr int kOffsets[4] = {0, 16, 2, 18};

// e0..e3 of one patch row: columns 2t + j of lane t, from the row's column col0.
template <bool kMasked>
inline void row_columns(const float* row, const BlockPart& b, __m512 e[4]) {
  const float* d = row + b.col0;
  __m512 a[4];
  for (int k = 0; k < 4; ++k)
    a[k] = kMasked ? _mm512_maskz_loadu_ps(b.loads[k], d + kOffsets[k])
                   : _mm512_loadu_ps(d + kOffsets[k]);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                         28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27,
                                        29, 31);
  e[0] = _mm512_permutex2var_ps(a[0], even, a[1]);
  e[1] = _mm512_permutex2var_ps(a[0], odd, a[1]);
  e[2] = _mm512_permutex2var_ps(a[2], even, a[3]);
  e[3] = _mm512_permutex2var_ps(a[2], odd, a[3]);
}

// The masks of `part` for lanes [t_lo, t_hi) of the block (lane t reads columns
// col0 + 2t .. col0 + 2t + 3), image width W.
void block_masks(int64_t col0, int t_lo, int t_hi, int64_t W, BlockPart* part) {
  const int64_t first = col0 + 2 * t_lo, last = col0 + 2 * (t_hi - 1) + 3;  // columns used
  const int64_t lo = first > 0 ? first : 0, hi = last < W - 1 ? last : W - 1;
  for (int k = 0; k < 4; ++k) {
    unsigned mask = 0;
    for (int u = 0; u < kLanes; ++u) {
      const int64_t col = col0 + kOffsets[k] + u;
      if (col >= lo && col <= hi) mask |= 1u << u;
    }
    part->loads[k] = static_cast<__mmask16>(mask);
  }
  unsigned lanes = 0;
  for (int u = t_lo; u < t_hi; ++u) lanes |= 1u << u;
  part->lanes = static_cast<__mmask16>(lanes);
  part->plain = t_lo == 0 && t_hi == kLanes && col0 >= 0 && col0 + 2 * kLanes + 1 < W;
  part->first = lo;
  part->last = hi >= lo ? hi : lo;
}

}  // namespace

void winograd_input_panel_f32_avx512(const WinogradPanel& p, const float* x, float* v) {
  constexpr int kBlocks = kNR / kLanes;
  const int64_t C = p.C, HW = p.H * p.W;
  // Each block's parts: the runs that hold its lanes (usually one).
  BlockPart parts[kBlocks][kMaxParts];
  int nparts[kBlocks];
  split_runs_into_blocks<kBlocks, kLanes>(p, parts, nparts, block_masks);
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; ++c) {
    for (int b = 0; b < kBlocks; ++b) {
      float* vb = v + c * kNR + b * kLanes;
      __m512 h0[4], h1[4];  // d B of patch rows 0 and 1, kept until rows 2 and 3 come
      for (int i = 0; i < 4; ++i) {
        __m512 e[4] = {zero, zero, zero, zero};
        for (int k = 0; k < nparts[b]; ++k) {
          const BlockPart& part = parts[b][k];
          const int64_t ih = 2 * part.run->ti - p.pad_h + i;
          if (ih < 0 || ih >= p.H) continue;
          const float* row = x + (part.run->n * C + c) * HW + ih * p.W;
          if (c + kAhead < C) {  // the same columns kAhead planes on (from memory, when cold)
            const float* ahead = row + kAhead * HW;
            __builtin_prefetch(ahead + part.first);
            __builtin_prefetch(ahead + part.last);
          }
          if (part.plain) {
            row_columns<false>(row, part, e);  // the block's only part
          } else {
            __m512 f[4];
            row_columns<true>(row, part, f);
            for (int j = 0; j < 4; ++j) e[j] = _mm512_mask_mov_ps(e[j], part.lanes, f[j]);
          }
        }
        const __m512 h[4] = {_mm512_sub_ps(e[0], e[2]), _mm512_add_ps(e[1], e[2]),
                             _mm512_sub_ps(e[2], e[1]), _mm512_sub_ps(e[1], e[3])};
        if (i == 0) {
          for (int j = 0; j < 4; ++j) h0[j] = h[j];
        } else if (i == 1) {
          for (int j = 0; j < 4; ++j) h1[j] = h[j];
        } else if (i == 2) {  // B^T rows 0-2: h0 - h2, h1 + h2, h2 - h1
          for (int j = 0; j < 4; ++j) {
            _mm512_storeu_ps(vb + (0 * 4 + j) * p.v_stride, _mm512_sub_ps(h0[j], h[j]));
            _mm512_storeu_ps(vb + (1 * 4 + j) * p.v_stride, _mm512_add_ps(h1[j], h[j]));
            _mm512_storeu_ps(vb + (2 * 4 + j) * p.v_stride, _mm512_sub_ps(h[j], h1[j]));
          }
        } else {  // B^T row 3: h1 - h3
          for (int j = 0; j < 4; ++j)
            _mm512_storeu_ps(vb + (3 * 4 + j) * p.v_stride, _mm512_sub_ps(h1[j], h[j]));
        }
      }
    }
  }
}

}  // namespace fastconv
