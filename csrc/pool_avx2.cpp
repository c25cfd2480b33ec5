// AVX2 row kernels of the pooling interior, float and double (compiled with -mavx2 -mfma;
// reached only through the AVX2 entry of the dispatch table, IsaKernels::pool). Contract:
// PoolRowKernels in microkernel.h. Loop order per block of L consecutive outputs (L = 8
// floats or 4 doubles, one ymm): window taps (i rows, then j columns, row-major) outer, the
// block's outputs in the lanes:
//   stride 1: tap j is one unaligned load at column c0 + l0 + j*dw;
//   stride 2: tap j is the even (j*dw == 0: loads at +0, +L) or odd (loads at +j*dw-1, +L-1)
//     columns of two loads, one shuffle; the lanes come out with their 64-bit pairs (float) or
//     values (double) in the order 0 2 1 3, the same for every tap, and are put back in order
//     once, before the store.
// max: running max + a winner code (the tap's offset i*rstep + j*dw: int32 lanes for float,
//   int64 for double) blended on "v > max || v != v" (NaN wins, the last NaN stays); the
//   int64 index = base + code is formed once per block. avg: 0 + taps in order, then one
//   division.
// The last block is shifted back to end at `count` (a few outputs are computed twice, alike);
// rows shorter than L outputs are one block with masked loads and stores (whole stores where
// the caller allows them to run on). No loads outside the taps' columns, except in the rows
// kernels (max_rows, avg_rows), whose short rows read on into the next rows, never past the
// input.
// max backward of 2x2 blocks, 4 outputs a step: their int64 indices minus the blocks' first
// elements, compared with 0, 1, W, W+1, give 4 lane masks, interleaved into the masks of the
// 8 elements of each of the two rows; dy, each value doubled, is stored under them (and).
// The last step of a row is shifted back to end at Wo (no masked stores: vmaskmovps took 38%
// of the time of LeNet's second pool on Zen 3).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "microkernel.h"

namespace fastconv {
namespace {

// The vector operations of one element type.
template <typename T>
struct Avx2;

template <>
struct Avx2<float> {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V maskload(const float* p, __m256i m) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void maskstore(float* p, __m256i m, V v) { _mm256_maskstore_ps(p, m, v); }
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V takes(V v, V cur) {  // v > cur, or v is NaN
    return _mm256_or_ps(_mm256_cmp_ps(v, cur, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  static V blend(V a, V b, V mask) { return _mm256_blendv_ps(a, b, mask); }
  static V code(int64_t offset) {  // int32 lanes, as float bits for blendv
    return _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(offset)));
  }
  // Even / odd values of the 2L values at a, b: 64-bit pairs in the order 0 2 1 3.
  static V evens(V a, V b) { return _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)); }
  static V odds(V a, V b) { return _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)); }
  static V unshuffle(V v) {  // 64-bit pairs 0 2 1 3 back to 0 1 2 3
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  // Lanes e (of `first` + lane, lane < L) with e < end.
  static __m256i below(int64_t first, int64_t end) {
    const __m256i e = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                       _mm256_set1_epi32(static_cast<int32_t>(first)));
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(end)), e);
  }
  // idx[l] = base + l*sw + code[l] for l < count (codes in lane order), 8 lanes.
  static void store_indices(V code, int64_t base, int64_t sw, int64_t count, int64_t* idx) {
    const __m256i codes = _mm256_castps_si256(code);
    const __m256i b = _mm256_set1_epi64x(base), step = _mm256_set1_epi64x(sw);
    const __m256i lane_lo = _mm256_mul_epu32(_mm256_setr_epi64x(0, 1, 2, 3), step);
    const __m256i lane_hi = _mm256_mul_epu32(_mm256_setr_epi64x(4, 5, 6, 7), step);
    const __m256i lo = _mm256_add_epi64(_mm256_add_epi64(b, lane_lo),
                                        _mm256_cvtepi32_epi64(_mm256_castsi256_si128(codes)));
    const __m256i hi = _mm256_add_epi64(_mm256_add_epi64(b, lane_hi),
                                        _mm256_cvtepi32_epi64(_mm256_extracti128_si256(codes, 1)));
    if (count >= 8) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx), lo);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + 4), hi);
      return;
    }
    const __m256i n = _mm256_set1_epi64x(count);
    _mm256_maskstore_epi64(reinterpret_cast<long long*>(idx),
                           _mm256_cmpgt_epi64(n, _mm256_setr_epi64x(0, 1, 2, 3)), lo);
    _mm256_maskstore_epi64(reinterpret_cast<long long*>(idx + 4),
                           _mm256_cmpgt_epi64(n, _mm256_setr_epi64x(4, 5, 6, 7)), hi);
  }
};

template <>
struct Avx2<double> {
  using V = __m256d;
  static constexpr int kLanes = 4;
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V maskload(const double* p, __m256i m) { return _mm256_maskload_pd(p, m); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static void maskstore(double* p, __m256i m, V v) { _mm256_maskstore_pd(p, m, v); }
  static V zero() { return _mm256_setzero_pd(); }
  static V set1(double x) { return _mm256_set1_pd(x); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V div(V a, V b) { return _mm256_div_pd(a, b); }
  static V takes(V v, V cur) {
    return _mm256_or_pd(_mm256_cmp_pd(v, cur, _CMP_GT_OQ), _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
  }
  static V blend(V a, V b, V mask) { return _mm256_blendv_pd(a, b, mask); }
  static V code(int64_t offset) { return _mm256_castsi256_pd(_mm256_set1_epi64x(offset)); }
  // Values in the order 0 2 1 3.
  static V evens(V a, V b) { return _mm256_unpacklo_pd(a, b); }
  static V odds(V a, V b) { return _mm256_unpackhi_pd(a, b); }
  static V unshuffle(V v) { return _mm256_permute4x64_pd(v, _MM_SHUFFLE(3, 1, 2, 0)); }
  static __m256i below(int64_t first, int64_t end) {
    const __m256i e = _mm256_add_epi64(_mm256_setr_epi64x(0, 1, 2, 3), _mm256_set1_epi64x(first));
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(end), e);
  }
  static void store_indices(V code, int64_t base, int64_t sw, int64_t count, int64_t* idx) {
    const __m256i lanes = _mm256_mul_epu32(_mm256_setr_epi64x(0, 1, 2, 3), _mm256_set1_epi64x(sw));
    const __m256i v = _mm256_add_epi64(_mm256_add_epi64(_mm256_set1_epi64x(base), lanes),
                                       _mm256_castpd_si256(code));
    if (count >= 4)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx), v);
    else
      _mm256_maskstore_epi64(reinterpret_cast<long long*>(idx), below(0, count), v);
  }
};

// Lanes l of the result: p[l*SW] (SW 1), or p[2*l'] in the order of Avx2<T>::evens (SW 2).
// `even`: the tap's column offset is 0 (load p[0..2L-1]); else load p[-1..2L-2], take odds.
template <typename T, int SW>
inline typename Avx2<T>::V load_tap(const T* p, bool even) {
  using A = Avx2<T>;
  constexpr int L = A::kLanes;
  if (SW == 1) return A::load(p);
  if (even) return A::evens(A::load(p), A::load(p + L));
  return A::odds(A::load(p - 1), A::load(p + L - 1));
}

// The same for a row shorter than a vector: masks[0], masks[1] for the halves of a 2L-value
// load at column offset 0 (SW 1: masks[0], the lanes); masks[2], masks[3] for taps at other
// offsets, loaded from one column left. Only the taps' own columns are read.
template <typename T, int SW>
inline typename Avx2<T>::V load_tap_masked(const T* p, bool even, const __m256i* masks) {
  using A = Avx2<T>;
  constexpr int L = A::kLanes;
  if (SW == 1) return A::maskload(p, masks[0]);
  if (even) return A::evens(A::maskload(p, masks[0]), A::maskload(p + L, masks[1]));
  return A::odds(A::maskload(p - 1, masks[2]), A::maskload(p + L - 1, masks[3]));
}

template <typename T, int SW>
inline typename Avx2<T>::V unshuffle(typename Avx2<T>::V v) {
  return SW == 1 ? v : Avx2<T>::unshuffle(v);
}

// The masks of a short row of `count` outputs: loads (see load_tap_masked) and the store.
struct ShortRowMasks {
  __m256i loads[4];
  __m256i store;
};

template <typename T, int SW>
inline ShortRowMasks short_row_masks(int64_t count) {
  using A = Avx2<T>;
  constexpr int L = A::kLanes;
  // Values needed: SW 1: lanes < count; SW 2, offset 0: elements <= 2*count - 2;
  // other offsets (loaded from one column left): elements <= 2*count - 1.
  return {{A::below(0, SW == 1 ? count : 2 * count - 1), A::below(L, 2 * count - 1),
           A::below(0, 2 * count), A::below(L, 2 * count)},
          A::below(0, count)};
}

// One block of outputs at p: the running max over the window's taps (i rows, then j columns)
// and each lane's winner code; load(q, even) reads one tap, plainly or masked.
template <typename T, typename Load>
__attribute__((always_inline)) inline void max_block(const T* p, int64_t nrows, int64_t rstep,
                                                     int64_t kw, int64_t dw, const Load& load,
                                                     typename Avx2<T>::V* cur,
                                                     typename Avx2<T>::V* code) {
  using A = Avx2<T>;
  *cur = load(p, true);
  *code = A::zero();
  for (int64_t i = 0; i < nrows; ++i) {
    const T* row = p + i * rstep;
    for (int64_t j = 0; j < kw; ++j) {
      if (i == 0 && j == 0) continue;
      const int64_t off = j * dw;
      const typename A::V v = load(row + off, off == 0);
      const typename A::V take = A::takes(v, *cur);
      *cur = A::blend(*cur, v, take);
      *code = A::blend(*code, A::code(i * rstep + off), take);
    }
  }
}

// KW: the window width when fixed at compile time (2, 3), else 0 (runtime kw).
template <typename T, int SW, int KW>
void max_row_avx2(const T* xr, int64_t nrows, int64_t rstep, int64_t kw_rt, int64_t dw,
                  int64_t c0, int64_t count, T* y, int64_t* idx, int64_t idx_base) {
  using A = Avx2<T>;
  constexpr int L = A::kLanes;
  const int64_t kw = KW ? KW : kw_rt;
  const auto load = [](const T* q, bool even) { return load_tap<T, SW>(q, even); };
  for (int64_t l0 = 0; l0 < count; l0 += L) {
    if (l0 + L > count) l0 = count - L;
    typename A::V cur, code;
    max_block<T>(xr + c0 + l0 * SW, nrows, rstep, kw, dw, load, &cur, &code);
    A::store(y + l0, unshuffle<T, SW>(cur));
    if (idx) A::store_indices(unshuffle<T, SW>(code), idx_base + l0 * SW, SW, L, idx + l0);
  }
}

// Rows shorter than a vector (count < L): one block as above, with masked loads and, unless
// the caller lets the row's vector run on into outputs it writes later (writable >= L),
// masked stores. LeNet's second pool (64x16x10x10, 5 outputs a row, one thread, float) took
// 0.56 ms as branchy scalar code, 0.24 ms with the comparisons in SSE registers one output at
// a time, and 0.16 ms this way with masked stores (vmaskmovps stores are slow on AMD).
template <typename T, int SW>
void max_row_short_avx2(const T* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t dw,
                        int64_t c0, int64_t count, int64_t writable, T* y, int64_t* idx,
                        int64_t idx_base) {
  using A = Avx2<T>;
  const ShortRowMasks masks = short_row_masks<T, SW>(count);
  const auto load = [&masks](const T* q, bool even) {
    return load_tap_masked<T, SW>(q, even, masks.loads);
  };
  typename A::V cur, code;
  max_block<T>(xr + c0, nrows, rstep, kw, dw, load, &cur, &code);
  const bool whole = writable >= A::kLanes;
  if (whole)
    A::store(y, unshuffle<T, SW>(cur));
  else
    A::maskstore(y, masks.store, unshuffle<T, SW>(cur));
  if (idx)
    A::store_indices(unshuffle<T, SW>(code), idx_base, SW, whole ? A::kLanes : count, idx);
}

template <typename T>
void max_row(const T* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t dw, int64_t sw,
             int64_t c0, int64_t count, int64_t writable, T* y, int64_t* idx, int64_t idx_base) {
  if (count < Avx2<T>::kLanes) {
    if (sw == 1)
      max_row_short_avx2<T, 1>(xr, nrows, rstep, kw, dw, c0, count, writable, y, idx, idx_base);
    else
      max_row_short_avx2<T, 2>(xr, nrows, rstep, kw, dw, c0, count, writable, y, idx, idx_base);
  } else if (sw == 1) {
    if (kw == 3)
      max_row_avx2<T, 1, 3>(xr, nrows, rstep, 3, dw, c0, count, y, idx, idx_base);
    else if (kw == 2)
      max_row_avx2<T, 1, 2>(xr, nrows, rstep, 2, dw, c0, count, y, idx, idx_base);
    else
      max_row_avx2<T, 1, 0>(xr, nrows, rstep, kw, dw, c0, count, y, idx, idx_base);
  } else {
    if (kw == 3)
      max_row_avx2<T, 2, 3>(xr, nrows, rstep, 3, dw, c0, count, y, idx, idx_base);
    else if (kw == 2)
      max_row_avx2<T, 2, 2>(xr, nrows, rstep, 2, dw, c0, count, y, idx, idx_base);
    else
      max_row_avx2<T, 2, 0>(xr, nrows, rstep, kw, dw, c0, count, y, idx, idx_base);
  }
}

// 0 + the taps in (i, j) order, then one division; load(q, even) reads one tap.
template <typename T, typename Load>
__attribute__((always_inline)) inline typename Avx2<T>::V avg_block(const T* p, int64_t nrows,
                                                                   int64_t rstep, int64_t kw,
                                                                   T divisor,
                                                                   const Load& load) {
  using A = Avx2<T>;
  typename A::V sum = A::zero();
  for (int64_t i = 0; i < nrows; ++i) {
    const T* row = p + i * rstep;
    for (int64_t j = 0; j < kw; ++j) sum = A::add(sum, load(row + j, j == 0));
  }
  return A::div(sum, A::set1(divisor));
}

template <typename T, int SW, int KW>
void avg_row_avx2(const T* xr, int64_t nrows, int64_t rstep, int64_t kw_rt, int64_t c0,
                  int64_t count, T divisor, T* y) {
  using A = Avx2<T>;
  constexpr int L = A::kLanes;
  const int64_t kw = KW ? KW : kw_rt;
  const auto load = [](const T* q, bool even) { return load_tap<T, SW>(q, even); };
  for (int64_t l0 = 0; l0 < count; l0 += L) {
    if (l0 + L > count) l0 = count - L;
    A::store(y + l0,
             unshuffle<T, SW>(avg_block<T>(xr + c0 + l0 * SW, nrows, rstep, kw, divisor, load)));
  }
}

// A row shorter than a vector as one masked block, the taps added in the same order as the
// full blocks' (so the same bits as scalar code). LeNet's second pool (64x16x10x10, 5 outputs a
// row, float) took 0.33 ms on one thread as a scalar loop per output.
template <typename T, int SW>
void avg_row_short_avx2(const T* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t c0,
                        int64_t count, T divisor, T* y) {
  using A = Avx2<T>;
  const ShortRowMasks masks = short_row_masks<T, SW>(count);
  const auto load = [&masks](const T* q, bool even) {
    return load_tap_masked<T, SW>(q, even, masks.loads);
  };
  A::maskstore(y, masks.store,
               unshuffle<T, SW>(avg_block<T>(xr + c0, nrows, rstep, kw, divisor, load)));
}

template <typename T>
void avg_row(const T* xr, int64_t nrows, int64_t rstep, int64_t kw, int64_t sw, int64_t c0,
             int64_t count, T divisor, T* y) {
  if (count < Avx2<T>::kLanes) {
    if (sw == 1)
      avg_row_short_avx2<T, 1>(xr, nrows, rstep, kw, c0, count, divisor, y);
    else
      avg_row_short_avx2<T, 2>(xr, nrows, rstep, kw, c0, count, divisor, y);
  } else if (sw == 1) {
    if (kw == 3)
      avg_row_avx2<T, 1, 3>(xr, nrows, rstep, 3, c0, count, divisor, y);
    else if (kw == 2)
      avg_row_avx2<T, 1, 2>(xr, nrows, rstep, 2, c0, count, divisor, y);
    else
      avg_row_avx2<T, 1, 0>(xr, nrows, rstep, kw, c0, count, divisor, y);
  } else {
    if (kw == 3)
      avg_row_avx2<T, 2, 3>(xr, nrows, rstep, 3, c0, count, divisor, y);
    else if (kw == 2)
      avg_row_avx2<T, 2, 2>(xr, nrows, rstep, 2, c0, count, divisor, y);
    else
      avg_row_avx2<T, 2, 0>(xr, nrows, rstep, kw, c0, count, divisor, y);
  }
}

// The rows kernels (PoolRowKernels::max_rows, avg_rows): the row kernels above over a stack of
// rows in one call. Rows shorter than a vector take plain loads wherever the block's reads stay
// inside `readable` (the next row's values fill the unused lanes) and whole stores wherever the
// vector ends inside the call's outputs (the next rows overwrite its surplus lanes): masked
// loads and stores only at the end of the stack.
template <typename T, int SW>
void max_rows_short_avx2(const T* xr, int64_t rows, int64_t x_step, int64_t plane_rows,
                         int64_t plane_row0, int64_t nrows, int64_t rstep, int64_t kw,
                         int64_t dw, int64_t count, int64_t readable, T* y, int64_t* idx) {
  using A = Avx2<T>;
  constexpr int L = A::kLanes;
  const ShortRowMasks masks = short_row_masks<T, SW>(count);
  const auto plain = [](const T* q, bool even) { return load_tap<T, SW>(q, even); };
  const auto masked = [&masks](const T* q, bool even) {
    return load_tap_masked<T, SW>(q, even, masks.loads);
  };
  const int64_t span = (nrows - 1) * rstep + (kw - 1) * dw + (SW == 1 ? L : 2 * L);
  int64_t plane_row = plane_row0;
  for (int64_t h = 0; h < rows; ++h) {
    typename A::V cur, code;
    if (h * x_step + span <= readable)
      max_block<T>(xr + h * x_step, nrows, rstep, kw, dw, plain, &cur, &code);
    else
      max_block<T>(xr + h * x_step, nrows, rstep, kw, dw, masked, &cur, &code);
    const bool whole = (rows - h) * count >= L;
    if (whole)
      A::store(y + h * count, unshuffle<T, SW>(cur));
    else
      A::maskstore(y + h * count, masks.store, unshuffle<T, SW>(cur));
    if (idx)
      A::store_indices(unshuffle<T, SW>(code), plane_row * x_step, SW, whole ? L : count,
                       idx + h * count);
    if (++plane_row == plane_rows) plane_row = 0;
  }
}

template <typename T>
void max_rows(const T* xr, int64_t rows, int64_t x_step, int64_t plane_rows, int64_t plane_row0,
              int64_t nrows, int64_t rstep, int64_t kw, int64_t dw, int64_t sw, int64_t count,
              int64_t readable, T* y, int64_t* idx) {
  if (count < Avx2<T>::kLanes) {
    const auto short_rows = sw == 1 ? &max_rows_short_avx2<T, 1> : &max_rows_short_avx2<T, 2>;
    return short_rows(xr, rows, x_step, plane_rows, plane_row0, nrows, rstep, kw, dw, count,
                      readable, y, idx);
  }
  for (int64_t h = 0; h < rows; ++h)
    max_row<T>(xr + h * x_step, nrows, rstep, kw, dw, sw, 0, count, count, y + h * count,
               idx ? idx + h * count : nullptr, (plane_row0 + h) % plane_rows * x_step);
}

template <typename T, int SW>
void avg_rows_short_avx2(const T* xr, int64_t rows, int64_t x_step, int64_t nrows,
                         int64_t rstep, int64_t kw, int64_t count, int64_t readable, T divisor,
                         T* y) {
  using A = Avx2<T>;
  constexpr int L = A::kLanes;
  const ShortRowMasks masks = short_row_masks<T, SW>(count);
  const auto plain = [](const T* q, bool even) { return load_tap<T, SW>(q, even); };
  const auto masked = [&masks](const T* q, bool even) {
    return load_tap_masked<T, SW>(q, even, masks.loads);
  };
  const int64_t span = (nrows - 1) * rstep + (kw - 1) + (SW == 1 ? L : 2 * L);
  for (int64_t h = 0; h < rows; ++h) {
    const T* p = xr + h * x_step;
    const typename A::V v =
        unshuffle<T, SW>(h * x_step + span <= readable
                             ? avg_block<T>(p, nrows, rstep, kw, divisor, plain)
                             : avg_block<T>(p, nrows, rstep, kw, divisor, masked));
    if ((rows - h) * count >= L)
      A::store(y + h * count, v);
    else
      A::maskstore(y + h * count, masks.store, v);
  }
}

template <typename T>
void avg_rows(const T* xr, int64_t rows, int64_t x_step, int64_t nrows, int64_t rstep,
              int64_t kw, int64_t sw, int64_t count, int64_t readable, T divisor, T* y) {
  if (count < Avx2<T>::kLanes) {
    const auto short_rows = sw == 1 ? &avg_rows_short_avx2<T, 1> : &avg_rows_short_avx2<T, 2>;
    return short_rows(xr, rows, x_step, nrows, rstep, kw, count, readable, divisor, y);
  }
  for (int64_t h = 0; h < rows; ++h)
    avg_row<T>(xr + h * x_step, nrows, rstep, kw, sw, 0, count, divisor, y + h * count);
}

// Outputs l .. l+3 of one row of blocks: first = the blocks' first elements (base + 2l + 2i).
template <typename T>
inline void max_backward_2x2_step(const int64_t* idx, const T* dy, __m256i first, __m256i w,
                                  __m256i w1, T* r0, T* r1, __m256i& inside) {
  const __m256i offset =
      _mm256_sub_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)), first);
  const __m256i m0 = _mm256_cmpeq_epi64(offset, _mm256_setzero_si256());  // top left
  const __m256i m1 = _mm256_cmpeq_epi64(offset, _mm256_set1_epi64x(1));   // top right
  const __m256i m2 = _mm256_cmpeq_epi64(offset, w);                       // bottom left
  const __m256i m3 = _mm256_cmpeq_epi64(offset, w1);                      // bottom right
  inside = _mm256_and_si256(inside,
                            _mm256_or_si256(_mm256_or_si256(m0, m1), _mm256_or_si256(m2, m3)));
  if constexpr (sizeof(T) == 4) {
    // lane l of m0/m1 (64 bits) -> 32-bit lanes 2l (its low half) / 2l+1 (its high half)
    const __m256 top = _mm256_castsi256_ps(_mm256_blend_epi32(m0, m1, 0xAA));
    const __m256 bottom = _mm256_castsi256_ps(_mm256_blend_epi32(m2, m3, 0xAA));
    const __m256 d = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(dy)),
                                              _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
    _mm256_storeu_ps(r0, _mm256_and_ps(d, top));
    _mm256_storeu_ps(r1, _mm256_and_ps(d, bottom));
  } else {
    const __m256d d = _mm256_loadu_pd(dy);
    const __m256d d01 = _mm256_permute4x64_pd(d, 0x50), d23 = _mm256_permute4x64_pd(d, 0xFA);
    const auto store_row = [&](double* r, __m256i even, __m256i odd) {
      const __m256i lo = _mm256_unpacklo_epi64(even, odd);  // outputs 0 and 2
      const __m256i hi = _mm256_unpackhi_epi64(even, odd);  // outputs 1 and 3
      _mm256_storeu_pd(r, _mm256_and_pd(d01, _mm256_castsi256_pd(
                                                 _mm256_permute2x128_si256(lo, hi, 0x20))));
      _mm256_storeu_pd(r + 4, _mm256_and_pd(d23, _mm256_castsi256_pd(
                                                     _mm256_permute2x128_si256(lo, hi, 0x31))));
    };
    store_row(r0, m0, m1);
    store_row(r1, m2, m3);
  }
}

template <typename T>
bool max_backward_2x2(const int64_t* idx, const T* dy, int64_t Ho, int64_t Wo, int64_t W,
                      T* dx) {
  const __m256i w = _mm256_set1_epi64x(W), w1 = _mm256_set1_epi64x(W + 1);
  const __m256i lanes_first = _mm256_setr_epi64x(0, 2, 4, 6);
  __m256i inside = _mm256_set1_epi64x(-1);
  for (int64_t h = 0; h < Ho; ++h, idx += Wo, dy += Wo) {
    T* r0 = dx + 2 * h * W;
    T* r1 = r0 + W;
    for (int64_t l = 0;; l += 4) {
      l = std::min(l, Wo - 4);  // the last 4 end at Wo (some written twice, alike)
      const __m256i first = _mm256_add_epi64(_mm256_set1_epi64x(2 * h * W + 2 * l), lanes_first);
      max_backward_2x2_step<T>(idx + l, dy + l, first, w, w1, r0 + 2 * l, r1 + 2 * l, inside);
      if (l == Wo - 4) break;
    }
    if (!_mm256_testc_si256(inside, _mm256_set1_epi64x(-1))) return false;
  }
  return true;
}

}  // namespace

const PoolRowKernels kPoolRowKernelsAvx2 = {
    &max_row<float>,          &avg_row<float>,          &max_row<double>, &avg_row<double>,
    &max_backward_2x2<float>, &max_backward_2x2<double>, nullptr,          &max_rows<float>,
    &avg_rows<float>,         &max_rows<double>,        &avg_rows<double>};

}  // namespace fastconv
