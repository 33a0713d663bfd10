// Independent tasks 0..n-1 over the intra-op threads, handed out one at a time from an atomic counter
// instead of at::parallel_for's static split into one contiguous range per thread: on these shared VMs a
// vCPU is at times slowed or descheduled, and with a static split the whole op then waits for it; here the
// other thread takes its remaining tasks. Each task is computed exactly as before (same results).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace mnv4 {

// Band b of `bands` even shares of `rows` rows is [band_start(rows, bands, b), band_start(rows, bands, b + 1)):
// the shares differ by at most one row, so no task is a long last band the other threads wait for (28 rows in
// 10 bands: 2 or 3 each, not 9 of 3 and one of 1), and none is empty while bands <= rows.
constexpr int64_t band_start(int64_t rows, int64_t bands, int64_t b) { return rows * b / bands; }

// fn(begin, end) as for at::parallel_for, called with one task [t, t + 1) at a time.
template <class F>
void parallel_tasks(int64_t n, const F& fn) {
  if (n <= 0) return;
  const int64_t threads = std::min<int64_t>(n, at::get_num_threads());
  if (threads <= 1 || at::in_parallel_region()) return fn(int64_t(0), n);
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < n;) fn(t, t + 1);
  });
}

}  // namespace mnv4
