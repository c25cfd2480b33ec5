// AVX2 row kernels of the pooling interior, float (compiled with -mavx2 -mfma; reached only
// through the AVX2 entry of the dispatch table, IsaKernels::pool). Contract: PoolRowKernels in
// pool.h. Loop order per block of 8 consecutive outputs: window taps (i rows, then j columns,
// row-major) outer, the 8 outputs in the lanes of one ymm:
//   stride 1: tap j is one unaligned load at column c0 + l0 + j*dw;
//   stride 2: tap j is the even (j*dw == 0: loads at +0, +8) or odd (loads at +j*dw-1, +7)
//     columns of two loads, one shufps; the lanes come out in the order 0 1 4 5 2 3 6 7,
//     the same for every tap, and are put back in order once, before the store.
// max: running max + an int32 code (the tap's offset i*rstep + j*dw) blended on
//   "v > max || v != v" (NaN wins, the last NaN stays); the int64 index = base + code is
//   formed once per block. avg: 0 + taps in order, then one division.
// The last block is shifted back to end at `count` (a few outputs are computed twice, alike);
// rows shorter than 8 outputs are one block with masked loads and stores. No loads outside the
// taps' columns.
#include <immintrin.h>

#include <cstdint>

#include "microkernel.h"

namespace fastconv {
namespace {

constexpr int kLanes = 8;

// Lanes l of the result: p[l*SW] (SW 1), or p[2*l'] in lane order 0 1 4 5 2 3 6 7 (SW 2).
// `even`: the tap's column offset is 0 (load p[0..15]); else load p[-1..14] and take odds.
template <int SW>
inline __m256 load_tap(const float* p, bool even) {
  if (SW == 1) return _mm256_loadu_ps(p);
  if (even) {
    const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    return _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  }
  const __m256 a = _mm256_loadu_ps(p - 1), b = _mm256_loadu_ps(p + 7);
  return _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
}

// Back to lane order 0..7 (64-bit pairs 0 2 1 3).
template <int SW>
inline __m256i unshuffle_epi32(__m256i v) {
  return SW == 1 ? v : _mm256_permute4x64_epi64(v, _MM_SHUFFLE(3, 1, 2, 0));
}
template <int SW>
inline __m256 unshuffle_ps(__m256 v) {
  return _mm256_castsi256_ps(unshuffle_epi32<SW>(_mm256_castps_si256(v)));
}

// One block of 8 outputs at p: the running max over the window's taps (i rows, then j
// columns) and each lane's int32 winner code (as float bits for blendv); load(q, even) reads
// one tap, plainly or masked.
template <typename Load>
__attribute__((always_inline)) inline void max_block(const float* p, int64_t nrows,
                                                     int64_t rstep, int64_t kw, int64_t dw,
                                                     const Load& load, __m256* cur,
                                                     __m256* code) {
  *cur = load(p, true);
  *code = _mm256_setzero_ps();
  for (int64_t i = 0; i < nrows; ++i) {
    const float* row = p + i * rstep;
    for (int64_t j = 0; j < kw; ++j) {
      if (i == 0 && j == 0) continue;
      const int64_t off = j * dw;
      const __m256 v = load(row + off, off == 0);
      const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, *cur, _CMP_GT_OQ),
                                       _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      *cur = _mm256_blendv_ps(*cur, v, take);
      const __m256i c = _mm256_set1_epi32(static_cast<int32_t>(i * rstep + off));
      *code = _mm256_blendv_ps(*code, _mm256_castsi256_ps(c), take);
    }
  }
}

// The block's int64 indices, lanes 0-3 and 4-7 back in order: base + l*SW + code[l].
template <int SW>
inline void block_indices(__m256 code, int64_t base, __m256i* lo, __m256i* hi) {
  const __m256i codes = unshuffle_epi32<SW>(_mm256_castps_si256(code));
  const __m256i b = _mm256_set1_epi64x(base);
  const __m256i lane_lo = _mm256_setr_epi64x(0, SW, 2 * SW, 3 * SW);
  const __m256i lane_hi = _mm256_setr_epi64x(4 * SW, 5 * SW, 6 * SW, 7 * SW);
  *lo = _mm256_add_epi64(_mm256_add_epi64(b, lane_lo),
                         _mm256_cvtepi32_epi64(_mm256_castsi256_si128(codes)));
  *hi = _mm256_add_epi64(_mm256_add_epi64(b, lane_hi),
                         _mm256_cvtepi32_epi64(_mm256_extracti128_si256(codes, 1)));
}

// KW: the window width when fixed at compile time (2, 3), else 0 (runtime kw).
template <int SW, int KW>
void max_row_avx2(const float* xr, int64_t nrows, int64_t rstep, int64_t kw_rt, int64_t dw,
                  int64_t c0, int64_t count, float* y, int64_t* idx, int64_t idx_base) {
  const int64_t kw = KW ? KW : kw_rt;
  const auto load = [](const float* q, bool even) { return load_tap<SW>(q, even); };
  for (int64_t l0 = 0; l0 < count; l0 += kLanes) {
    if (l0 + kLanes > count) l0 = count - kLanes;
    __m256 cur, code;
    max_block(xr + c0 + l0 * SW, nrows, rstep, kw, dw, load, &cur, &code);
    _mm256_storeu_ps(y + l0, unshuffle_ps<SW>(cur));
    if (idx) {
      __m256i lo, hi;
      block_indices<SW>(code, idx_base + l0 * SW, &lo, &hi);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + l0), lo);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + l0 + 4), hi);
    }
  }
}

// Rows shorter than a vector (count < 8): one block as above, with masked loads that read only
// the taps' own columns (so nothing past the row or the array) and masked stores. LeNet's
// second pool (64x16x10x10, 5 outputs a row, one thread) took 0.56 ms as branchy scalar code,
// 0.24 ms with the comparisons in SSE registers one output at a time, and 0.16 ms this way.
// masks[0], masks[1]: the halves of a 16-value load for taps at column offset 0 (SW 2; SW 1:
// masks[0], the lanes); masks[2], masks[3]: taps at other offsets, loaded from one column left.
template <int SW>
inline __m256 load_tap_masked(const float* p, bool even, const __m256i* masks) {
  if (SW == 1) return _mm256_maskload_ps(p, masks[0]);
  if (even) {
    const __m256 a = _mm256_maskload_ps(p, masks[0]), b = _mm256_maskload_ps(p + 8, masks[1]);
    return _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  }
  const __m256 a = _mm256_maskload_ps(p - 1, masks[2]);
  const __m256 b = _mm256_maskload_ps(p + 7, masks[3]);
  return _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
}

// The masks of a short row of `count` outputs: loads (see load_tap_masked) and the store.
struct ShortRowMasks {
  __m256i loads[4];
  __m256i store;
};

template <int SW>
inline ShortRowMasks short_row_masks(int64_t count) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i iota8 = _mm256_add_epi32(iota, _mm256_set1_epi32(8));
  const auto below = [](__m256i e, int64_t end) {  // lanes with e < end
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(end)), e);
  };
  // Values needed: SW 1: lanes < count; SW 2, offset 0: elements <= 2*count - 2;
  // other offsets (loaded from one column left): elements <= 2*count - 1.
  return {{below(iota, SW == 1 ? count : 2 * count - 1), below(iota8, 2 * count - 1),
           below(iota, 2 * count), below(iota8, 2 * count)},
          below(iota, count)};
}

template <int SW>
void max_row_short_avx2(const float* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t dw,
                        int64_t c0, int64_t count, float* y, int64_t* idx, int64_t idx_base) {
  const ShortRowMasks masks = short_row_masks<SW>(count);
  const auto load = [&masks](const float* q, bool even) {
    return load_tap_masked<SW>(q, even, masks.loads);
  };
  __m256 cur, code;
  max_block(xr + c0, nrows, rstep, kw, dw, load, &cur, &code);
  _mm256_maskstore_ps(y, masks.store, unshuffle_ps<SW>(cur));
  if (idx) {
    __m256i lo, hi;
    block_indices<SW>(code, idx_base, &lo, &hi);
    const __m256i n = _mm256_set1_epi64x(count);
    _mm256_maskstore_epi64(reinterpret_cast<long long*>(idx),
                           _mm256_cmpgt_epi64(n, _mm256_setr_epi64x(0, 1, 2, 3)), lo);
    _mm256_maskstore_epi64(reinterpret_cast<long long*>(idx + 4),
                           _mm256_cmpgt_epi64(n, _mm256_setr_epi64x(4, 5, 6, 7)), hi);
  }
}

void max_row_f32(const float* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t dw,
                 int64_t sw, int64_t c0, int64_t count, float* y, int64_t* idx,
                 int64_t idx_base) {
  if (count < kLanes) {
    if (sw == 1)
      max_row_short_avx2<1>(xr, nrows, rstep, kw, dw, c0, count, y, idx, idx_base);
    else
      max_row_short_avx2<2>(xr, nrows, rstep, kw, dw, c0, count, y, idx, idx_base);
  } else if (sw == 1) {
    if (kw == 3)
      max_row_avx2<1, 3>(xr, nrows, rstep, 3, dw, c0, count, y, idx, idx_base);
    else if (kw == 2)
      max_row_avx2<1, 2>(xr, nrows, rstep, 2, dw, c0, count, y, idx, idx_base);
    else
      max_row_avx2<1, 0>(xr, nrows, rstep, kw, dw, c0, count, y, idx, idx_base);
  } else {
    if (kw == 3)
      max_row_avx2<2, 3>(xr, nrows, rstep, 3, dw, c0, count, y, idx, idx_base);
    else if (kw == 2)
      max_row_avx2<2, 2>(xr, nrows, rstep, 2, dw, c0, count, y, idx, idx_base);
    else
      max_row_avx2<2, 0>(xr, nrows, rstep, kw, dw, c0, count, y, idx, idx_base);
  }
}

template <int SW, int KW>
void avg_row_avx2(const float* xr, int64_t nrows, int64_t rstep, int64_t kw_rt, int64_t c0,
                  int64_t count, float divisor, float* y) {
  const int64_t kw = KW ? KW : kw_rt;
  const __m256 d = _mm256_set1_ps(divisor);
  for (int64_t l0 = 0; l0 < count; l0 += kLanes) {
    if (l0 + kLanes > count) l0 = count - kLanes;
    const float* p = xr + c0 + l0 * SW;
    __m256 sum = _mm256_setzero_ps();
    for (int64_t i = 0; i < nrows; ++i) {
      const float* row = p + i * rstep;
      for (int64_t j = 0; j < kw; ++j) sum = _mm256_add_ps(sum, load_tap<SW>(row + j, j == 0));
    }
    _mm256_storeu_ps(y + l0, unshuffle_ps<SW>(_mm256_div_ps(sum, d)));
  }
}

// A row shorter than a vector as one masked block, the taps added in the same order as the
// full blocks' (so the same bits as scalar code). LeNet's second pool (64x16x10x10, 5 outputs a
// row) took 0.33 ms on one thread as a scalar loop per output.
template <int SW>
void avg_row_short_avx2(const float* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t c0,
                        int64_t count, float divisor, float* y) {
  const ShortRowMasks masks = short_row_masks<SW>(count);
  const float* p = xr + c0;
  __m256 sum = _mm256_setzero_ps();
  for (int64_t i = 0; i < nrows; ++i) {
    const float* row = p + i * rstep;
    for (int64_t j = 0; j < kw; ++j)
      sum = _mm256_add_ps(sum, load_tap_masked<SW>(row + j, j == 0, masks.loads));
  }
  _mm256_maskstore_ps(y, masks.store,
                      unshuffle_ps<SW>(_mm256_div_ps(sum, _mm256_set1_ps(divisor))));
}

void avg_row_f32(const float* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t sw,
                 int64_t c0, int64_t count, float divisor, float* y) {
  if (count < kLanes) {
    if (sw == 1)
      avg_row_short_avx2<1>(xr, nrows, rstep, kw, c0, count, divisor, y);
    else
      avg_row_short_avx2<2>(xr, nrows, rstep, kw, c0, count, divisor, y);
  } else if (sw == 1) {
    if (kw == 3)
      avg_row_avx2<1, 3>(xr, nrows, rstep, 3, c0, count, divisor, y);
    else if (kw == 2)
      avg_row_avx2<1, 2>(xr, nrows, rstep, 2, c0, count, divisor, y);
    else
      avg_row_avx2<1, 0>(xr, nrows, rstep, kw, c0, count, divisor, y);
  } else {
    if (kw == 3)
      avg_row_avx2<2, 3>(xr, nrows, rstep, 3, c0, count, divisor, y);
    else if (kw == 2)
      avg_row_avx2<2, 2>(xr, nrows, rstep, 2, c0, count, divisor, y);
    else
      avg_row_avx2<2, 0>(xr, nrows, rstep, kw, c0, count, divisor, y);
  }
}

}  // namespace

const PoolRowKernels kPoolRowKernelsAvx2 = {&max_row_f32, &avg_row_f32};

}  // namespace fastconv
