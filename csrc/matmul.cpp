// Parallel over tiles of C: (row block of kRowBlock rows) x (column block of NC columns). Each
// task packs its rows of A and its columns of B block by block, then runs the micro-kernels;
// tasks write disjoint tiles, so the result does not depend on the thread count.
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

}  // namespace

template <typename T>
void matmul(const MatmulShape& s, const T* a, const T* b, T* c) {
  if (s.M == 0 || s.N == 0) return;
  const MicroKernel<T> uk = active_microkernel<T>();
  const GemmBlocking blk = gemm_blocking(uk);
  const int64_t row_blocks = ceil_div(s.M, kRowBlock), col_blocks = ceil_div(s.N, blk.nc);
  const int64_t tasks = row_blocks * col_blocks;
  const int nthreads = threads_for(2.0 * s.M * s.N * s.K, kMinFlopsPerThread, tasks);
  const int64_t a_size = round_up(kRowBlock, uk.mr) * blk.kc;
  const int64_t b_size = gemm_b_block_size(uk, blk);
  T* a_scratch = thread_scratch<T>(kScratchPackedA, nthreads * a_size);
  T* b_scratch = thread_scratch<T>(kScratchPackedB, nthreads * b_size);
  parallel_for(tasks, nthreads, [&](int64_t task, int thread) {
    const int64_t i0 = (task / col_blocks) * kRowBlock, j0 = (task % col_blocks) * blk.nc;
    const int64_t rows = std::min(kRowBlock, s.M - i0), cols = std::min(blk.nc, s.N - j0);
    T* abuf = a_scratch + thread * a_size;
    const T* a_rows = a + i0 * s.a_row;
    gemm(
        uk, blk, rows, cols, s.K,
        [&](int64_t pc, int64_t kc) {
          pack_a_block(a_rows, s.a_row, s.a_col, rows, pc, kc, uk.mr, abuf);
          return static_cast<const T*>(abuf);
        },
        [&](int64_t pc, int64_t kc, int64_t jc, int64_t nc, T* dst) {
          pack_b_strided(b, s.b_row, s.b_col, pc, kc, j0 + jc, nc, uk.nr, dst);
        },
        c + i0 * s.N + j0, s.N, false, b_scratch + thread * b_size);
  });
}

template void matmul<float>(const MatmulShape&, const float*, const float*, float*);
template void matmul<double>(const MatmulShape&, const double*, const double*, double*);

}  // namespace fastconv
