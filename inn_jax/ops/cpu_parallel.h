// Shared by the CPU kernels (cpu_scan.cc, cpu_attention.cc): work split over the machine's cores.
#ifndef INN_JAX_OPS_CPU_PARALLEL_H_
#define INN_JAX_OPS_CPU_PARALLEL_H_

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace inn_jax {

// Runs fn(first, end) over [0, count) in contiguous ranges on up to hardware_concurrency threads
// (the calling one included), and returns when all are done.
template <typename Fn>
void parallel_for(int64_t count, Fn fn) {
  int64_t threads = std::max<int64_t>(1, std::thread::hardware_concurrency());
  threads = std::min(threads, count);
  if (threads <= 1) {
    fn(0, count);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t per = (count + threads - 1) / threads;
  for (int64_t start = per; start < count; start += per) {
    pool.emplace_back(fn, start, std::min(count, start + per));
  }
  fn(0, std::min(count, per));
  for (auto& t : pool) t.join();
}

}  // namespace inn_jax

#endif  // INN_JAX_OPS_CPU_PARALLEL_H_
