// Packed, cache-blocked GEMM driver (BLIS style); portable: only the micro-kernel it calls
// through the dispatch table is ISA-specific.
//
//   C (M x N, row stride ldc) = [C +] A (M x K) * B (K x N)
//
// Loop order:  jc over N in NC-column blocks
//                pc over K in KC blocks:  pack B(pc:pc+kc, jc:jc+nc) into NR-column panels
//                                         (L2-resident), get the packed A block (M x kc)
//                  jr over nc in NR:      B panel (kc x NR) stays in L1
//                    ir over M in MR rows: micro-kernel on one MR x NR tile of C, its A
//                                          panel from L2 (the smaller of the two panels)
//              below kBPanelOuterMinKc, ir outside jr instead (A's panel in L1): the
//              tiles of C, not the panels, are then most of the traffic, and this order
//              walks along C's rows (see kBPanelOuterMinKc).
// Packed layouts (all k-major, zero-padded to whole panels):
//   A block for (pc, kc): ceil(M/MR) panels, panel i at offset i*MR*kc, element [k*MR + r]
//   B block:              ceil(nc/NR) panels, panel j at offset j*NR*kc, element [k*NR + c]
// A "full" packed A stores its blocks one after another: block pc at offset pc * round_up(M, MR).
// Callers supply A and B through callables, so convolutions can pack straight from the image
// (implicit im2col) instead of materialising a column matrix.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common.h"
#include "microkernel.h"

namespace fastconv {

struct GemmBlocking {
  int64_t kc;  // reduction block
  int64_t nc;  // column block (multiple of NR)
};

// The reduction length from which gemm keeps each B panel in L1 across the A panels (A/B
// against the other order on AVX-512: the input gradient of the stem, kc 64, and of
// resnet_down 1.05-1.07x; a linear layer's weight gradient, kc 32, 1.3-1.5x slower).
constexpr int64_t kBPanelOuterMinKc = 64;

// KC x NC block of B about 192 KiB, so it stays in a 256-512 KiB L2.
template <typename T>
GemmBlocking gemm_blocking(const MicroKernel<T>& uk) {
  const int64_t kc = 256;
  const int64_t nc = std::max<int64_t>(uk.nr, (192 * 1024 / (kc * sizeof(T))) / uk.nr * uk.nr);
  return {kc, nc};
}

// Scratch for one packed B block.
template <typename T>
int64_t gemm_b_block_size(const MicroKernel<T>& uk, const GemmBlocking& blk) {
  return blk.kc * round_up(blk.nc, uk.nr);
}

// Packs rows [0, M) and columns [k0, k0+kc) of A, where A[i][k] = src[i*rs + k*cs], as one
// A block (see the layout above).
template <typename T>
void pack_a_block(const T* src, int64_t rs, int64_t cs, int64_t M, int64_t k0, int64_t kc,
                  int mr, T* dst) {
  for (int64_t i0 = 0; i0 < M; i0 += mr) {
    T* panel = dst + i0 * kc;
    const int64_t rows = std::min<int64_t>(mr, M - i0);
    for (int64_t k = 0; k < kc; ++k) {
      const T* s = src + i0 * rs + (k0 + k) * cs;
      T* d = panel + k * mr;
      int64_t r = 0;
      for (; r < rows; ++r) d[r] = s[r * rs];
      for (; r < mr; ++r) d[r] = T(0);
    }
  }
}

// Packs all of A (M x K) block by block, for a driver that reuses it across many calls.
template <typename T>
void pack_a_full(const T* src, int64_t rs, int64_t cs, int64_t M, int64_t K, int64_t KC, int mr,
                 T* dst) {
  const int64_t m_pad = round_up(M, mr);
  for (int64_t pc = 0; pc < K; pc += KC)
    pack_a_block(src, rs, cs, M, pc, std::min(KC, K - pc), mr, dst + pc * m_pad);
}

template <typename T>
int64_t packed_a_full_size(int64_t M, int64_t K, int mr) {
  return round_up(M, mr) * K;
}

// Packs B(k0:k0+kc, j0:j0+nc) where B[k][j] = src[k*rs + j*cs] (see the layout above).
// `transpose` (the ISA's, may be null) serves the case of columns contiguous in memory.
template <typename T>
void pack_b_strided(const T* src, int64_t rs, int64_t cs, int64_t k0, int64_t kc, int64_t j0,
                    int64_t nc, int nr, T* dst, TransposeFn<T> transpose = nullptr) {
  for (int64_t jp = 0; jp < nc; jp += nr) {
    T* panel = dst + jp * kc;
    const int64_t cols = std::min<int64_t>(nr, nc - jp);
    if (rs == 1 && cs != 1) {
      // Columns contiguous in memory (a transposed operand): read each column straight down.
      if (transpose) {
        transpose(src + k0 + (j0 + jp) * cs, cs, cols, kc, panel, nr);
      } else {
        for (int64_t c = 0; c < cols; ++c) {
          const T* column = src + k0 + (j0 + jp + c) * cs;
          for (int64_t k = 0; k < kc; ++k) panel[k * nr + c] = column[k];
        }
      }
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t c = cols; c < nr; ++c) panel[k * nr + c] = T(0);
      continue;
    }
    for (int64_t k = 0; k < kc; ++k) {
      const T* s = src + (k0 + k) * rs + (j0 + jp) * cs;
      T* d = panel + k * nr;
      int64_t c = 0;
      if (cs == 1) {
        copy_run(s, cols, d);  // inline, not a libc call per row (input grad 1.03-1.09x)
        c = cols;
      } else {
        for (; c < cols; ++c) d[c] = s[c * cs];
      }
      for (; c < nr; ++c) d[c] = T(0);
    }
  }
}

// c (rows x cols, row stride ldc) = 0.
template <typename T>
void zero_tile(T* c, int64_t ldc, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) std::fill(c + i * ldc, c + i * ldc + cols, T(0));
}

// The valid rows x cols corner of a full micro-kernel tile computed into `edge` (row stride
// nr), stored into c the way the micro-kernel would: c = [c +] edge.
template <typename T>
void store_partial_tile(const T* edge, int nr, int64_t rows, int64_t cols, T* c, int64_t ldc,
                        bool accumulate) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + edge[i * nr + j] : edge[i * nr + j];
}

// a_block(pc, kc) -> const T* packed A block for rows [0, M), columns [pc, pc+kc).
// pack_b(pc, kc, jc, nc, T* dst) packs B(pc:pc+kc, jc:jc+nc).
// b_scratch holds gemm_b_block_size elements. Serial: callers parallelise over tiles of C.
template <typename T, typename ABlock, typename PackB>
void gemm(const MicroKernel<T>& uk, const GemmBlocking& blk, int64_t M, int64_t N, int64_t K,
          const ABlock& a_block, const PackB& pack_b, T* c, int64_t ldc, bool accumulate,
          T* b_scratch) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) zero_tile(c, ldc, M, N);
    return;
  }
  const int mr = uk.mr, nr = uk.nr;
  T edge[16 * 32];  // one tile for partial tiles at the right and bottom edges (MR*NR <= 512)
  for (int64_t jc = 0; jc < N; jc += blk.nc) {
    const int64_t nc = std::min(blk.nc, N - jc);
    for (int64_t pc = 0; pc < K; pc += blk.kc) {
      const int64_t kc = std::min(blk.kc, K - pc);
      pack_b(pc, kc, jc, nc, b_scratch);
      const T* a = a_block(pc, kc);
      const bool acc = accumulate || pc > 0;
      const auto tile = [&](int64_t i0, int64_t j0) {
        const T* a_panel = a + i0 * kc;
        const T* b_panel = b_scratch + j0 * kc;
        const int64_t rows = std::min<int64_t>(mr, M - i0), cols = std::min<int64_t>(nr, nc - j0);
        T* c_tile = c + i0 * ldc + jc + j0;
        if (rows == mr && cols == nr) {
          uk.fn(kc, a_panel, b_panel, c_tile, ldc, acc);
          return;
        }
        uk.fn(kc, a_panel, b_panel, edge, nr, false);
        store_partial_tile(edge, nr, rows, cols, c_tile, ldc, acc);
      };
      if (kc >= kBPanelOuterMinKc) {
        for (int64_t j0 = 0; j0 < nc; j0 += nr)
          for (int64_t i0 = 0; i0 < M; i0 += mr) tile(i0, j0);
      } else {
        for (int64_t i0 = 0; i0 < M; i0 += mr)
          for (int64_t j0 = 0; j0 < nc; j0 += nr) tile(i0, j0);
      }
    }
  }
}

// The same product with B supplied row by row, for the indirect micro-kernels:
// b_rows(pc, kc, j0, cols, panel, rows) sets rows[k] (k < kc) to the nr values of
// B(pc + k, j0 : j0 + nr), pointing into the caller's data where they are contiguous there and
// packing the other rows into `panel` (kc x nr scratch, zero padded past `cols`). The B panel
// is the outer loop, so its rows stay in L1 while every row panel of A uses them.
template <typename T, typename ABlock, typename BRows>
void gemm_rows(const MicroKernel<T>& uk, const GemmBlocking& blk, int64_t M, int64_t N,
               int64_t K, const ABlock& a_block, const BRows& b_rows, T* c, int64_t ldc,
               bool accumulate, T* panel, const T** rows) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) zero_tile(c, ldc, M, N);
    return;
  }
  const int mr = uk.mr, nr = uk.nr;
  T edge[16 * 32];  // partial tiles at the bottom and right edges (MR*NR <= 512)
  for (int64_t pc = 0; pc < K; pc += blk.kc) {
    const int64_t kc = std::min(blk.kc, K - pc);
    const T* a = a_block(pc, kc);
    const bool acc = accumulate || pc > 0;
    for (int64_t j0 = 0; j0 < N; j0 += nr) {
      const int64_t cols = std::min<int64_t>(nr, N - j0);
      b_rows(pc, kc, j0, cols, panel, rows);
      for (int64_t i0 = 0; i0 < M; i0 += mr) {
        const int64_t m = std::min<int64_t>(mr, M - i0);
        T* c_tile = c + i0 * ldc + j0;
        if (m == mr && cols == nr) {
          uk.indirect(kc, a + i0 * kc, rows, 0, c_tile, ldc, acc);
          continue;
        }
        uk.indirect(kc, a + i0 * kc, rows, 0, edge, nr, false);
        store_partial_tile(edge, nr, m, cols, c_tile, ldc, acc);
      }
    }
  }
}

}  // namespace fastconv
