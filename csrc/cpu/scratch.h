// Per-thread scratch of the CPU ops, kept between calls in a std::vector and used from a 64-byte aligned
// start: the NHWC tiles' pixel strides are whole cache lines (uib.cpp tile_stride), which keeps vector loads
// inside one line only from a line-aligned base, and a std::vector's data is 16-byte aligned.
#pragma once

#include <cstdint>
#include <vector>

namespace mnv4 {

inline float* aligned_scratch(std::vector<float>& v, int64_t floats) {
  if (int64_t(v.size()) < floats + 16) v.resize(static_cast<size_t>(floats + 16));
  const auto p = (reinterpret_cast<std::uintptr_t>(v.data()) + 63) & ~std::uintptr_t(63);
  return reinterpret_cast<float*>(p);
}

}  // namespace mnv4
