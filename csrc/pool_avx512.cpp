// AVX-512F pooling kernels (compiled with -mavx512f -mavx512vl; reached only through the
// AVX-512 entry of the dispatch table, IsaKernels::pool): the max-pool backward of 2x2 blocks
// at 8 outputs a step (AVX2's does 4), and in float for planes that the blocks tile with rows
// of fewer outputs, over the stack of all planes' rows; the table's other pooling kernels are
// AVX2's.
// A step: the 8 int64 indices minus their blocks' first elements (offsets 0, 1, W, W+1 for
// the top left, top right, bottom left, bottom right element) are checked inside their
// blocks with 64-bit compares; then, as int32 lanes (exact once inside), each offset is
// doubled into two lanes minus (0, 1), and that compared with 0 (top row) and W (bottom row)
// gives the 16-lane masks of the two rows' elements; dy, each value doubled, is stored under
// them (zero-masked whole stores). The last step of a row is shifted back to end at Wo.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "microkernel.h"

namespace fastconv {
namespace {

// Outputs l .. l+7 of one row of blocks, whose first elements are first + 2i (i < 8).
template <typename T>
inline void max_backward_2x2_step(const int64_t* idx, const T* dy, __m512i first, __m512i w,
                                  __m512i w1, __m512i w32, T* r0, T* r1, __mmask8& inside) {
  const __m512i offset = _mm512_sub_epi64(_mm512_loadu_si512(idx), first);
  inside &= _mm512_cmpeq_epi64_mask(offset, _mm512_setzero_si512()) |
            _mm512_cmpeq_epi64_mask(offset, _mm512_set1_epi64(1)) |
            _mm512_cmpeq_epi64_mask(offset, w) | _mm512_cmpeq_epi64_mask(offset, w1);
  // lane 2i + b (b = 0, 1): offset_i - b, as int32
  const __m512i pairs = _mm512_sub_epi32(
      _mm512_permutexvar_epi32(
          _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7),
          _mm512_castsi256_si512(_mm512_cvtepi64_epi32(offset))),
      _mm512_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1));
  const __mmask16 top = _mm512_cmpeq_epi32_mask(pairs, _mm512_setzero_si512());
  const __mmask16 bottom = _mm512_cmpeq_epi32_mask(pairs, w32);
  if constexpr (sizeof(T) == 4) {
    const __m512 d = _mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7),
        _mm512_castps256_ps512(_mm256_loadu_ps(dy)));
    _mm512_storeu_ps(r0, _mm512_maskz_mov_ps(top, d));
    _mm512_storeu_ps(r1, _mm512_maskz_mov_ps(bottom, d));
  } else {
    const __m512d d = _mm512_loadu_pd(dy);
    const __m512d lo = _mm512_permutexvar_pd(_mm512_setr_epi64(0, 0, 1, 1, 2, 2, 3, 3), d);
    const __m512d hi = _mm512_permutexvar_pd(_mm512_setr_epi64(4, 4, 5, 5, 6, 6, 7, 7), d);
    _mm512_storeu_pd(r0, _mm512_maskz_mov_pd(__mmask8(top), lo));
    _mm512_storeu_pd(r0 + 8, _mm512_maskz_mov_pd(__mmask8(top >> 8), hi));
    _mm512_storeu_pd(r1, _mm512_maskz_mov_pd(__mmask8(bottom), lo));
    _mm512_storeu_pd(r1 + 8, _mm512_maskz_mov_pd(__mmask8(bottom >> 8), hi));
  }
}

// Contract: MaxBackward2x2Fn in microkernel.h.
template <typename T>
bool max_backward_2x2(const int64_t* idx, const T* dy, int64_t Ho, int64_t Wo, int64_t W,
                      T* dx) {
  if (W >= (int64_t(1) << 30)) return false;  // the int32 offsets would wrap
  const __m512i w = _mm512_set1_epi64(W), w1 = _mm512_set1_epi64(W + 1);
  const __m512i w32 = _mm512_set1_epi32(int32_t(W));
  const __m512i lanes_first = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  for (int64_t h = 0; h < Ho; ++h, idx += Wo, dy += Wo) {
    T* r0 = dx + 2 * h * W;
    T* r1 = r0 + W;
    __mmask8 inside = 0xFF;
    for (int64_t l = 0;; l += 8) {
      l = std::min(l, Wo - 8);  // the last 8 end at Wo (some written twice, alike)
      const __m512i first = _mm512_add_epi64(_mm512_set1_epi64(2 * h * W + 2 * l), lanes_first);
      max_backward_2x2_step<T>(idx + l, dy + l, first, w, w1, w32, r0 + 2 * l, r1 + 2 * l,
                               inside);
      if (l == Wo - 8) break;
    }
    if (inside != 0xFF) return false;
  }
  return true;
}

// Contract: MaxBackward2x2StackFn in microkernel.h. One masked step a row (Wo < 8 outputs,
// 2*Wo elements of each dx row): the blocks' first elements 2*(plane row)*W + 2i, the row's
// plane row counted along the stack. Float only: in float64 (two stores a dx row) it measured
// 0.95x the scatter at 2 threads.
bool max_backward_2x2_stack(const int64_t* idx, const float* dy, int64_t rows, int64_t h0,
                            int64_t Ho, int64_t Wo, float* dx) {
  const int64_t W = 2 * Wo;
  const __m512i w = _mm512_set1_epi64(W), w1 = _mm512_set1_epi64(W + 1);
  const __m512i w32 = _mm512_set1_epi32(int32_t(W));
  const __m512i lanes_first = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  const __m512i pair_lanes = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __mmask8 outputs = __mmask8((1u << Wo) - 1);
  const __mmask16 elements = __mmask16((1u << W) - 1);
  int64_t hp = h0 % Ho;
  const float* dx_end = dx + 2 * W * rows;
  for (int64_t h = 0; h < rows; ++h, idx += Wo, dy += Wo) {
    const __m512i first = _mm512_add_epi64(_mm512_set1_epi64(2 * hp * W), lanes_first);
    const __m512i offset = _mm512_sub_epi64(_mm512_maskz_loadu_epi64(outputs, idx), first);
    const __mmask8 inside = _mm512_cmpeq_epi64_mask(offset, _mm512_setzero_si512()) |
                            _mm512_cmpeq_epi64_mask(offset, _mm512_set1_epi64(1)) |
                            _mm512_cmpeq_epi64_mask(offset, w) |
                            _mm512_cmpeq_epi64_mask(offset, w1);
    if ((inside & outputs) != outputs) return false;
    // lane 2i + b (b = 0, 1): offset_i - b, as int32 (exact once inside)
    const __m512i pairs = _mm512_sub_epi32(
        _mm512_permutexvar_epi32(pair_lanes, _mm512_castsi256_si512(_mm512_cvtepi64_epi32(offset))),
        _mm512_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1));
    const __mmask16 top = _mm512_cmpeq_epi32_mask(pairs, _mm512_setzero_si512());
    const __mmask16 bottom = _mm512_cmpeq_epi32_mask(pairs, w32);
    const __m512 d = _mm512_permutexvar_ps(
        pair_lanes, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(outputs, dy)));
    float* r0 = dx + 2 * W * h;
    // Whole vectors where they end inside the block: what they write past a row the rows
    // after it rewrite (masked stores of the 2*Wo values: 0.95-0.96x at 1 and 2 threads,
    // LeNet's second pool).
    if (r0 + W + 16 <= dx_end) {
      _mm512_storeu_ps(r0, _mm512_maskz_mov_ps(top, d));
      _mm512_storeu_ps(r0 + W, _mm512_maskz_mov_ps(bottom, d));
    } else {
      _mm512_mask_storeu_ps(r0, elements, _mm512_maskz_mov_ps(top, d));
      _mm512_mask_storeu_ps(r0 + W, elements, _mm512_maskz_mov_ps(bottom, d));
    }
    if (++hp == Ho) hp = 0;
  }
  return true;
}

}  // namespace

PoolRowKernels pool_kernels_avx512(const PoolRowKernels& avx2) {
  PoolRowKernels table = avx2;
  table.max_backward_2x2_f32 = &max_backward_2x2<float>;
  table.max_backward_2x2_f64 = &max_backward_2x2<double>;
  table.max_backward_2x2_stack_f32 = &max_backward_2x2_stack;
  return table;
}

}  // namespace fastconv
