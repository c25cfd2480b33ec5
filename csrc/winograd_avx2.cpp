// Winograd F(2x2, 3x3) input and output transforms of one panel of 16 tiles, float, AVX2
// (compiled with -mavx2 -mfma; reached only through the AVX2 dispatch table; the AVX-512
// table's input transform is winograd_avx512.cpp's, on blocks of 16). Contract: input_panel
// and output_panel in microkernel.h; the math and layouts: winograd.cpp. Same values as the
// portable transforms of winograd_transforms.inc (the same additions in the same order).
//
// Input: the panel's 16 lanes are two blocks of 8. Per channel, block and patch
// row i, the columns (e0, e1, e2, e3) of the block's 8 tiles are the even and odd columns of
// two pairs of loads (columns 0..15 and 2..17 from the block's first column; shufps, then one
// permute back to lane order); d B of the row follows at once, and B^T (d B) is formed as the
// rows come, so that d B never leaves the registers (the portable transform stores it and
// reads it back, and handles the tiles over the padding one scalar at a time: a third of
// cifar_c2's forward).
// A block that lies over the padding, ends the image's rows, or holds tiles of two runs uses
// masked loads that read only the columns its tiles need inside the image, then keeps only
// its own lanes of each run.
#include <immintrin.h>

#include <cstdint>

#include "microkernel.h"
#include "winograd_blocks.h"

namespace fastconv {
namespace {

constexpr int kLanes = 8;  // a block: one ymm of 8 tiles
constexpr int kMaxParts = kLanes;  // runs in one block: each holds at least one of its lanes
// Planes ahead whose rows are prefetched: a panel reads a few columns of 4 rows of every
// channel plane, too scattered for the hardware prefetcher. With x out of the caches (as in
// bench/run.py) cifar_c2, cifar_c3 and resnet_b8 forward and input grad ran 1.05-1.2x longer
// without; in cache it makes no difference.
constexpr int64_t kAhead = 2;

// One run's part of one block: where its columns start and which of them to load.
struct BlockPart {
  const WinogradTileRun* run;
  int64_t col0;        // image column of the block's lane 0 (as if the run covered it)
  bool plain;          // all 18 columns inside the image and the block's lanes all this run's
  int64_t first, last;  // the first and last column inside the image that the block reads
  __m256i loads[4];    // masks of the loads at column offsets 0, 8, 2, 10
  __m256 lanes;        // the block's lanes that are this run's
};

// Lanes of the result in the order 0 1 4 5 2 3 6 7 (shufps of two 8-column loads), put back.
inline __m256 unshuffle(__m256 v) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
}

// e0..e3 of one patch row: columns 2t + j of lane t, from the row's column col0.
template <bool kMasked>
inline void row_columns(const float* row, const BlockPart& b, __m256 e[4]) {
  const float* d = row + b.col0;
  __m256 a0, a1, a2, a3;
  if (kMasked) {
    a0 = _mm256_maskload_ps(d, b.loads[0]);
    a1 = _mm256_maskload_ps(d + 8, b.loads[1]);
    a2 = _mm256_maskload_ps(d + 2, b.loads[2]);
    a3 = _mm256_maskload_ps(d + 10, b.loads[3]);
  } else {
    a0 = _mm256_loadu_ps(d);
    a1 = _mm256_loadu_ps(d + 8);
    a2 = _mm256_loadu_ps(d + 2);
    a3 = _mm256_loadu_ps(d + 10);
  }
  e[0] = unshuffle(_mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0)));
  e[1] = unshuffle(_mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1)));
  e[2] = unshuffle(_mm256_shuffle_ps(a2, a3, _MM_SHUFFLE(2, 0, 2, 0)));
  e[3] = unshuffle(_mm256_shuffle_ps(a2, a3, _MM_SHUFFLE(3, 1, 3, 1)));
  if (kMasked)
    for (int j = 0; j < 4; ++j) e[j] = _mm256_and_ps(e[j], b.lanes);
}

// The masks of `part` for lanes [t_lo, t_hi) of the block (lane t reads columns
// col0 + 2t .. col0 + 2t + 3), image width W.
void block_masks(int64_t col0, int t_lo, int t_hi, int64_t W, BlockPart* part) {
  const int64_t first = col0 + 2 * t_lo, last = col0 + 2 * (t_hi - 1) + 3;  // columns used
  const int64_t lo = first > 0 ? first : 0, hi = last < W - 1 ? last : W - 1;
  const int offsets[4] = {0, 8, 2, 10};
  alignas(32) int32_t m[8];
  for (int k = 0; k < 4; ++k) {
    for (int u = 0; u < 8; ++u) {
      const int64_t col = col0 + offsets[k] + u;
      m[u] = col >= lo && col <= hi ? -1 : 0;
    }
    part->loads[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
  }
  for (int u = 0; u < 8; ++u) m[u] = u >= t_lo && u < t_hi ? -1 : 0;
  part->lanes = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(m)));
  part->plain = t_lo == 0 && t_hi == kLanes && col0 >= 0 && col0 + 2 * kLanes + 1 < W;
  part->first = lo;
  part->last = hi >= lo ? hi : lo;
}

}  // namespace

template <int kNR>
void winograd_input_panel_f32_avx2(const WinogradPanel& p, const float* x, float* v) {
  constexpr int kBlocks = kNR / kLanes;
  const int64_t C = p.C, HW = p.H * p.W;
  // Each block's parts: the runs that hold its lanes (usually one).
  BlockPart parts[kBlocks][kMaxParts];
  int nparts[kBlocks];
  split_runs_into_blocks<kBlocks, kLanes>(p, parts, nparts, block_masks);
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t c = 0; c < C; ++c) {
    for (int b = 0; b < kBlocks; ++b) {
      float* vb = v + c * kNR + b * kLanes;
      __m256 h0[4], h1[4];  // d B of patch rows 0 and 1, kept until rows 2 and 3 come
      for (int i = 0; i < 4; ++i) {
        __m256 e[4] = {zero, zero, zero, zero};
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
          __m256 f[4];
          if (part.plain) {
            row_columns<false>(row, part, f);
          } else {
            row_columns<true>(row, part, f);
          }
          for (int j = 0; j < 4; ++j) e[j] = _mm256_or_ps(e[j], f[j]);  // parts' lanes: disjoint
        }
        const __m256 h[4] = {_mm256_sub_ps(e[0], e[2]), _mm256_add_ps(e[1], e[2]),
                             _mm256_sub_ps(e[2], e[1]), _mm256_sub_ps(e[1], e[3])};
        if (i == 0) {
          for (int j = 0; j < 4; ++j) h0[j] = h[j];
        } else if (i == 1) {
          for (int j = 0; j < 4; ++j) h1[j] = h[j];
        } else if (i == 2) {  // B^T rows 0-2: h0 - h2, h1 + h2, h2 - h1
          for (int j = 0; j < 4; ++j) {
            _mm256_storeu_ps(vb + (0 * 4 + j) * p.v_stride, _mm256_sub_ps(h0[j], h[j]));
            _mm256_storeu_ps(vb + (1 * 4 + j) * p.v_stride, _mm256_add_ps(h1[j], h[j]));
            _mm256_storeu_ps(vb + (2 * 4 + j) * p.v_stride, _mm256_sub_ps(h[j], h1[j]));
          }
        } else {  // B^T row 3: h1 - h3
          for (int j = 0; j < 4; ++j)
            _mm256_storeu_ps(vb + (3 * 4 + j) * p.v_stride, _mm256_sub_ps(h1[j], h[j]));
        }
      }
    }
  }
}

template void winograd_input_panel_f32_avx2<16>(const WinogradPanel&, const float*, float*);

// Output transform, per output channel and block of 8 tiles: A^T M A in registers (the
// portable transform's additions in its order, so the same values); a block of 8 whole tiles
// of one run over two output rows (cifar_c2's, cifar_c3's and resnet_b8's panels) stores its
// tiles' columns interleaved (unpack, then a permute across the halves) as 4 rows of 16
// values, any other block lane by lane from the stack, as the portable transform does (odd
// Ho / Wo: the last tile row / column keeps only its first row / column).
template <int kNR>
bool winograd_output_panel_f32_avx2(const WinogradPanel& p, const float* m, int64_t m_stride,
                                    int64_t k0, int64_t kn, const float* bias, float* y) {
  constexpr int kBlocks = kNR / kLanes;
  // NaN at the end where a value was an infinity or a NaN (v * 0 + probe per value).
  __m256 probe = _mm256_setzero_ps();
  const __m256 zero = _mm256_setzero_ps();
  const int64_t P = p.Ho * p.Wo;
  // Per block: its run if one run of whole tiles in two rows covers it, else null.
  const WinogradTileRun* whole[kBlocks];
  for (int blk = 0; blk < kBlocks; ++blk) {
    whole[blk] = nullptr;
    for (int ri = 0; ri < p.nruns; ++ri) {
      const WinogradTileRun& run = p.runs[ri];
      const int first = blk * kLanes - run.lane;  // the block's first lane within the run
      if (first < 0 || first + kLanes > run.len) continue;
      const int64_t last_column = 2 * (run.tj0 + first + kLanes - 1) + 1;
      if (2 * run.ti + 1 < p.Ho && last_column < p.Wo) whole[blk] = &run;
    }
  }
  for (int64_t kl = 0; kl < kn; ++kl) {
    const int64_t k = k0 + kl;
    const __m256 b = _mm256_set1_ps(bias ? bias[k] : 0.0f);
    for (int blk = 0; blk < kBlocks; ++blk) {
      const float* mb = m + kl * kNR + blk * kLanes;
      __m256 a0[4], a1[4];  // A^T M
      for (int j = 0; j < 4; ++j) {
        const __m256 m0 = _mm256_loadu_ps(mb + (0 * 4 + j) * m_stride);
        const __m256 m1 = _mm256_loadu_ps(mb + (1 * 4 + j) * m_stride);
        const __m256 m2 = _mm256_loadu_ps(mb + (2 * 4 + j) * m_stride);
        const __m256 m3 = _mm256_loadu_ps(mb + (3 * 4 + j) * m_stride);
        a0[j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
        a1[j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
      }
      // (A^T M) A: the tiles' left and right columns of output rows 0 and 1
      __m256 left[2], right[2];
      for (int r = 0; r < 2; ++r) {
        const __m256* a = r == 0 ? a0 : a1;
        left[r] = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), a[2]), b);
        right[r] = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(a[1], a[2]), a[3]), b);
        probe = _mm256_fmadd_ps(left[r], zero, _mm256_fmadd_ps(right[r], zero, probe));
      }
      if (const WinogradTileRun* run = whole[blk]) {
        const int64_t tile = run->tj0 + blk * kLanes - run->lane;
        float* row0 = y + (run->n * p.K + k) * P + 2 * run->ti * p.Wo + 2 * tile;
        for (int r = 0; r < 2; ++r) {
          const __m256 lo = _mm256_unpacklo_ps(left[r], right[r]);  // tiles 0, 1 | 4, 5
          const __m256 hi = _mm256_unpackhi_ps(left[r], right[r]);  // tiles 2, 3 | 6, 7
          _mm256_storeu_ps(row0 + r * p.Wo, _mm256_permute2f128_ps(lo, hi, 0x20));
          _mm256_storeu_ps(row0 + r * p.Wo + kLanes, _mm256_permute2f128_ps(lo, hi, 0x31));
        }
        continue;
      }
      alignas(32) float values[2][2][kLanes];  // [row][column][lane]
      for (int r = 0; r < 2; ++r) {
        _mm256_store_ps(values[r][0], left[r]);
        _mm256_store_ps(values[r][1], right[r]);
      }
      for (int ri = 0; ri < p.nruns; ++ri) {
        const WinogradTileRun& run = p.runs[ri];
        const int lo = run.lane > blk * kLanes ? run.lane : blk * kLanes;
        const int hi = run.lane + run.len < (blk + 1) * kLanes ? run.lane + run.len
                                                                : (blk + 1) * kLanes;
        const int64_t oh = 2 * run.ti;
        float* plane = y + (run.n * p.K + k) * P;
        for (int l = lo; l < hi; ++l) {
          const int64_t ow = 2 * (run.tj0 + l - run.lane);
          const int u = l - blk * kLanes;
          for (int r = 0; r < 2 && oh + r < p.Ho; ++r) {
            float* row = plane + (oh + r) * p.Wo;
            row[ow] = values[r][0][u];
            if (ow + 1 < p.Wo) row[ow + 1] = values[r][1][u];
          }
        }
      }
    }
  }
  return _mm256_movemask_ps(_mm256_cmp_ps(probe, probe, _CMP_UNORD_Q)) == 0;
}

template bool winograd_output_panel_f32_avx2<16>(const WinogradPanel&, const float*, int64_t,
                                                 int64_t, int64_t, const float*, float*);

}  // namespace fastconv
