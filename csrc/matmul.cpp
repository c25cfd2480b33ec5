// Parallel over tiles of C: (row block of at most kRowBlock rows) x (column block of at most
// NC columns, narrower where that is needed for every thread to get several tasks: a linear
// layer's forward pass has few rows). Each task packs its rows of A and its columns of B block
// by block (transposed operands through the ISA's register transposes), then runs the
// micro-kernels; tasks write disjoint tiles, so the result does not depend on the thread count.
#include "matmul.h"

#include <algorithm>

#include "common.h"
#include "dispatch.h"
#include "gemm.h"
#include "threading.h"

namespace fastconv {
namespace {

constexpr int64_t kRowBlock = 96;  // multiple of every MR (6)
constexpr double kMinFlopsPerThread = 2e5;
constexpr int64_t kTasksPerThread = 4;

}  // namespace

template <typename T>
void matmul(const MatmulShape& s, const T* a, const T* b, T* c) {
  if (s.M == 0 || s.N == 0) return;
  const MicroKernel<T> uk = active_microkernel<T>();
  const GemmBlocking blk = gemm_blocking(uk);
  const int64_t row_blocks = ceil_div(s.M, kRowBlock);
  // Column blocks: NC wide, or narrower (whole NR panels) until there are kTasksPerThread tasks
  // per thread (measured: 32 x 4096 by 4096 x 256 took 1.9 ms as two blocks of 192 and 64).
  const int max_threads = threads_for(2.0 * s.M * s.N * s.K, kMinFlopsPerThread,
                                      row_blocks * ceil_div(s.N, uk.nr));
  const int64_t wanted = std::max(ceil_div(s.N, blk.nc),
                                  ceil_div(kTasksPerThread * max_threads, row_blocks));
  const int64_t col_width = std::min(blk.nc, round_up(ceil_div(s.N, wanted), uk.nr));
  const int64_t col_blocks = ceil_div(s.N, col_width);
  const int64_t tasks = row_blocks * col_blocks;
  const int nthreads = std::min<int64_t>(max_threads, tasks);
  const TransposeFn<T> transpose = IsaKernelsOf<T>::transpose(active_isa());
  const int64_t b_size = gemm_b_block_size(uk, blk);
  T* b_scratch = thread_scratch<T>(kScratchPackedB, nthreads * b_size);
  // A packed once for all its column blocks where it is small (a linear layer's activations or
  // gradients), else by each task for its rows.
  const int64_t m_pad = round_up(s.M, uk.mr), k_blocks = ceil_div(s.K, blk.kc);
  const bool a_shared = col_blocks > 1 && m_pad * s.K * int64_t(sizeof(T)) <= (16 << 20);
  const int64_t a_size = a_shared ? m_pad * s.K : round_up(kRowBlock, uk.mr) * blk.kc;
  T* a_scratch = thread_scratch<T>(kScratchPackedA, a_shared ? a_size : nthreads * a_size);
  // A block pc at offset pc * m_pad (pack_a_full's layout), one task per block, in parallel
  // from 20,000 values a thread (serial below 100,000, the 32 x 4096 activations of a linear
  // layer's forward pass were packed while the other thread waited; A/B both orders at 2
  // threads, (32 x 4096) times (256 x 4096)^T: 1.12-1.15x).
  if (a_shared) {
    parallel_for(k_blocks, threads_for(double(m_pad) * s.K, 2e4, k_blocks), [&](int64_t b, int) {
      const int64_t pc = b * blk.kc;
      pack_a_block(a, s.a_row, s.a_col, s.M, pc, std::min(blk.kc, s.K - pc), uk.mr,
                   a_scratch + pc * m_pad);
    });
  }
  parallel_for(tasks, nthreads, [&](int64_t task, int thread) {
    const int64_t i0 = (task / col_blocks) * kRowBlock, j0 = (task % col_blocks) * col_width;
    const int64_t rows = std::min(kRowBlock, s.M - i0), cols = std::min(col_width, s.N - j0);
    T* abuf = a_scratch + thread * a_size;
    const T* a_rows = a + i0 * s.a_row;
    const auto a_block = [&](int64_t pc, int64_t kc) {
      if (a_shared) return static_cast<const T*>(a_scratch + pc * m_pad + i0 * kc);
      pack_a_block(a_rows, s.a_row, s.a_col, rows, pc, kc, uk.mr, abuf);
      return static_cast<const T*>(abuf);
    };
    T* c_block = c + i0 * s.N + j0;
    gemm(
        uk, blk, rows, cols, s.K, a_block,
        [&](int64_t pc, int64_t kc, int64_t jc, int64_t nc, T* dst) {
          pack_b_strided(b, s.b_row, s.b_col, pc, kc, j0 + jc, nc, uk.nr, dst, transpose);
        },
        c_block, s.N, false, b_scratch + thread * b_size);
  });
}

template void matmul<float>(const MatmulShape&, const float*, const float*, float*);
template void matmul<double>(const MatmulShape&, const double*, const double*, double*);

}  // namespace fastconv
