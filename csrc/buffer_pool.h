// Memory for the kernels' output arrays, kept for reuse after the arrays die.
//
// A training step allocates the same activations and gradients every step; fresh memory from
// the system page-faults on first touch inside the kernel's threads, which contend for the
// process's memory map (the small CIFAR net's step: 1,400-1,600 faults, 4-12% of its time at
// 2 threads, none measurable at 1). Freed blocks of 64 KiB and more are kept, keyed by size
// rounded up to 4 KiB, and handed out again for the same size; the cached (free) bytes stay
// within a limit, beyond which blocks go back to the system. Blocks are 64-byte aligned.
// Thread-safe; never touches Python objects (bindings.cpp ties a block's release to the
// lifetime of the NumPy array built on it).
#pragma once

#include <cstddef>

namespace fastconv {

void* buffer_pool_acquire(size_t nbytes);  // throws std::bad_alloc when memory runs out
void buffer_pool_release(void* block);     // a block from buffer_pool_acquire, or null

void set_buffer_pool_limit(size_t bytes);  // 0: nothing is cached (frees the cached blocks)
size_t buffer_pool_limit();
size_t buffer_pool_cached_bytes();         // free bytes held for reuse now

}  // namespace fastconv
