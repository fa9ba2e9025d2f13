// Shared by the CPU kernels (cpu_scan.cc, cpu_attention.cc): work split over XLA's own threads.
#ifndef INN_JAX_OPS_CPU_PARALLEL_H_
#define INN_JAX_OPS_CPU_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace inn_jax {

// Runs fn(first, end) over [0, count) in contiguous ranges, one per thread of XLA's intra-op
// pool (the handler's ffi::ThreadPool), and returns when all are done. No thread is created:
// the ranges go to the pool XLA runs its other ops on, so a kernel neither oversubscribes the
// cores nor ignores the process's thread settings. The caller takes ranges too, from the same
// counter, so the loop completes even where every pool thread is busy or the pool runs tasks
// inline (the FFI promises neither parallelism nor order). A task that starts after every range
// is taken returns at once; the shared state outlives the call for it, and such a task never
// touches fn (a range handed out is finished before the caller returns).
template <typename Fn>
void parallel_for(xla::ffi::ThreadPool& pool, int64_t count, Fn fn) {
  const int64_t workers = std::min<int64_t>(count, std::max<int64_t>(1, pool.num_threads()));
  if (workers <= 1) {
    if (count > 0) fn(0, count);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0}, active{0};
    std::mutex mu;
    std::condition_variable idle;
  };
  auto state = std::make_shared<State>();
  const int64_t per = (count + workers - 1) / workers;
  const int64_t ranges = (count + per - 1) / per;
  Fn* f = &fn;
  auto take = [state, f, per, ranges, count] {
    for (int64_t r; (r = state->next.fetch_add(1)) < ranges;) {
      (*f)(r * per, std::min(count, (r + 1) * per));
    }
  };
  for (int64_t i = 1; i < ranges; ++i) {
    pool.Schedule([state, take] {
      state->active.fetch_add(1);  // Before taking a range: the caller waits for it.
      take();
      if (state->active.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->idle.notify_all();
      }
    });
  }
  take();
  std::unique_lock<std::mutex> lock(state->mu);
  state->idle.wait(lock, [&] { return state->active.load() == 0; });
}

}  // namespace inn_jax

#endif  // INN_JAX_OPS_CPU_PARALLEL_H_
