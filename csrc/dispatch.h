// Runtime CPU dispatch: the table of micro-kernels in use, chosen once from CPU detection
// (the best supported ISA) and switchable by name (FASTCONV_ISA, fastconv.set_isa).
#pragma once

#include <string>
#include <vector>

#include "microkernel.h"

namespace fastconv {

// Names of the ISAs this build contains and this CPU can run, best last.
std::vector<std::string> available_isas();
// Names of the ISAs compiled into this build, whether or not this CPU can run them.
std::vector<std::string> compiled_isas();
const IsaKernels& active_isa();
// Returns false (and changes nothing) if `name` is unknown or not runnable on this CPU.
bool set_active_isa(const std::string& name);

template <typename T>
const MicroKernel<T>& active_microkernel();
template <>
inline const MicroKernel<float>& active_microkernel<float>() { return active_isa().f32; }
template <>
inline const MicroKernel<double>& active_microkernel<double>() { return active_isa().f64; }

template <typename T>
const PlaneKernels<T>& active_plane_kernels();
template <>
inline const PlaneKernels<float>& active_plane_kernels<float>() { return active_isa().planes_f32; }
template <>
inline const PlaneKernels<double>& active_plane_kernels<double>() {
  return active_isa().planes_f64;
}

}  // namespace fastconv
