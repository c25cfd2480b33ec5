// The split of a Winograd input panel's tile runs among its SIMD blocks, shared by the AVX2
// and AVX-512 input transforms (each includes it under its own compiler flags: internal
// linkage, so every file keeps its own copy).
#pragma once

#include <cstdint>

#include "microkernel.h"

namespace fastconv {
namespace {

// parts[b][0, nparts[b]): the runs holding lanes of block b (kLanes tiles from lane b*kLanes),
// with col0 (the image column of the block's lane 0, as if the run covered it) and the ISA's
// masks, block_masks(col0, t_lo, t_hi, W, &part), for the run's lanes [t_lo, t_hi) of the
// block.
template <int kBlocks, int kLanes, typename Part, typename MaskFn>
void split_runs_into_blocks(const WinogradPanel& p, Part (*parts)[kLanes], int* nparts,
                            MaskFn block_masks) {
  for (int b = 0; b < kBlocks; ++b) nparts[b] = 0;
  for (int ri = 0; ri < p.nruns; ++ri) {
    const WinogradTileRun& run = p.runs[ri];
    for (int b = 0; b < kBlocks; ++b) {
      const int t_lo = run.lane > b * kLanes ? run.lane - b * kLanes : 0;
      const int end = run.lane + run.len - b * kLanes;
      const int t_hi = end < kLanes ? end : kLanes;
      if (t_lo >= t_hi) continue;
      Part& part = parts[b][nparts[b]++];
      part.run = &run;
      part.col0 = 2 * (run.tj0 - (run.lane - b * kLanes)) - p.pad_w;
      block_masks(part.col0, t_lo, t_hi, p.W, &part);
    }
  }
}

}  // namespace
}  // namespace fastconv
