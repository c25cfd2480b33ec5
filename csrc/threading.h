// Thread control. Every parallel region of fastconv goes through parallel_for: dynamic
// scheduling, so that a thread the OS preempts (the machine may be shared) does not hold the
// others at the barrier; no nested parallelism (a call from inside an outer OpenMP region runs
// serially); and a size threshold so that small problems stay on one thread. Results never
// depend on which thread ran a task: each task writes its own outputs in a fixed order, and
// per-thread scratch is only scratch.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastconv {

// The threads a kernel called from this thread may use: set_num_threads's n (default: every
// CPU this process may run on, or OMP_NUM_THREADS), lowered by this thread's OpenMP limit
// (omp_get_max_threads: what threadpoolctl's threadpool_limits and omp_set_num_threads set),
// and 1 in a child forked after the parent's kernels started threads (GNU OpenMP's pool does
// not survive fork: a parallel region there would hang).
int get_num_threads();
void set_num_threads(int n);  // n >= 1, checked by the caller; also this thread's OpenMP limit
bool openmp_enabled();
bool in_forked_child();  // forked after the parent started threads: kernels run serially
void note_threads_started();

// Threads worth using for `work` units (e.g. flops) when each thread should get at least
// `min_work_per_thread` of them, capped by the task count and the configured thread count.
inline int threads_for(double work, double min_work_per_thread, int64_t tasks) {
  int64_t by_work = static_cast<int64_t>(work / min_work_per_thread);
  int64_t n = std::min<int64_t>({static_cast<int64_t>(get_num_threads()), tasks, by_work});
  return static_cast<int>(std::max<int64_t>(n, 1));
}

// The threads of fastconv's parallel regions running now, over every calling thread: a region
// gets what get_num_threads() leaves of them (at least its caller's one), so that kernels
// called from several Python threads at once share the cores instead of each starting a full
// team (threads x threads).
class ThreadClaim {
 public:
  explicit ThreadClaim(int wanted);  // claims min(wanted, free threads), at least 1
  ~ThreadClaim();
  ThreadClaim(const ThreadClaim&) = delete;
  ThreadClaim& operator=(const ThreadClaim&) = delete;
  int threads() const { return n_; }

 private:
  int n_;
};
// The most threads claimed at once since the last reset (for the tests).
int peak_threads_claimed(bool reset);

// Calls body(task, thread) for task in [0, tasks), thread in [0, nthreads); fewer threads may
// run them (see ThreadClaim), never more.
template <typename Body>
void parallel_for(int64_t tasks, int nthreads, const Body& body) {
#ifdef _OPENMP
  if (nthreads > 1 && tasks > 1 && !omp_in_parallel() && !in_forked_child()) {
    const ThreadClaim claim(static_cast<int>(std::min<int64_t>(nthreads, tasks)));
    const int n = claim.threads();
    if (n > 1) {
      note_threads_started();
#pragma omp parallel for schedule(dynamic, 1) num_threads(n)
      for (int64_t t = 0; t < tasks; ++t) body(t, omp_get_thread_num());
      return;
    }
    for (int64_t t = 0; t < tasks; ++t) body(t, 0);
    return;
  }
#endif
  (void)nthreads;
  for (int64_t t = 0; t < tasks; ++t) body(t, 0);
}

// The same, handing the tasks out in runs of consecutive ones, about 8 runs per thread: for
// many small tasks (pooling or depthwise planes), where handing out each one costs a shared
// counter's round trip between the cores.
template <typename Body>
void parallel_for_runs(int64_t tasks, int nthreads, const Body& body) {
  const int64_t run = nthreads > 1 ? std::max<int64_t>(1, tasks / (8 * int64_t(nthreads))) : 1;
  parallel_for((tasks + run - 1) / run, nthreads, [&](int64_t r, int thread) {
    for (int64_t t = r * run; t < std::min(tasks, (r + 1) * run); ++t) body(t, thread);
  });
}

}  // namespace fastconv
