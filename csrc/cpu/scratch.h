// Per-thread scratch of the CPU ops: two arenas per thread, kept between calls, shared by every op and
// schedule, used from a 64-byte aligned start.
//   task_scratch: what one task works in (tiles, windows). One arena for all ops rather than one per call
//     site: the lines an op's tasks write were then written by the op before it and are still in L2/L3.
//     With a buffer per schedule, the first op of a schedule after a run of others would write lines last
//     touched a whole pass earlier, long evicted.
//   call_scratch: what an op's calling thread shares with its tasks (the mid split's partial sums in fp32,
//     its mid tensor in bf16). Its own arena, because the calling thread runs tasks too.
// Aligned: the NHWC tiles' pixel strides are whole cache lines (uib.cpp tile_stride), which keeps vector
// loads inside one line only from a line-aligned base, and a std::vector's data is 16-byte aligned.
// A returned pointer is valid until the same arena is asked for again on this thread.
#pragma once

#include <cstdint>
#include <vector>

namespace mnv4 {

inline float* aligned_scratch(std::vector<float>& v, int64_t floats) {
  if (int64_t(v.size()) < floats + 16) v.resize(static_cast<size_t>(floats + 16));
  const auto p = (reinterpret_cast<std::uintptr_t>(v.data()) + 63) & ~std::uintptr_t(63);
  return reinterpret_cast<float*>(p);
}

// `floats` rounded up to whole 64-byte lines: each part of a scratch carved in such sizes starts on a line.
inline int64_t lines16(int64_t floats) { return (floats + 15) / 16 * 16; }

inline float* task_scratch(int64_t floats) {
  thread_local std::vector<float> arena;
  return aligned_scratch(arena, floats);
}

// The same arenas holding elements of E (float or cpu::bf16_t); parts carved in lines_of<E> sizes start on a line.
template <class E>
inline int64_t lines_of(int64_t elems) {
  constexpr int64_t per_line = 64 / sizeof(E);
  return (elems + per_line - 1) / per_line * per_line;
}
template <class E>
inline E* task_scratch_of(int64_t elems) {
  return reinterpret_cast<E*>(task_scratch((elems * int64_t(sizeof(E)) + 3) / 4));
}

inline float* call_scratch(int64_t floats) {
  thread_local std::vector<float> arena;
  return aligned_scratch(arena, floats);
}

}  // namespace mnv4
