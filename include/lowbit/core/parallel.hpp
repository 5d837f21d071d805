// parallel_for over row blocks on a small persistent thread pool.
//
// The range [0, n) is cut into at most `threads` contiguous parts, each a
// multiple of `grain` except the last; part t always covers the same rows for
// a given (n, grain, threads), and every row is computed by one thread with
// the same code, so results are bit-identical for any thread count.
//
// The thread count is the caller's: per call, or the process default set with
// set_num_threads() (initially std::thread::hardware_concurrency()). Workers
// are started on first use and kept. A parallel_for issued from inside a
// worker, or while another thread is using the pool, runs serially on the
// calling thread instead of waiting.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "error.hpp"

namespace lowbit {

namespace detail {

class thread_pool {
 public:
  static thread_pool& instance() {
    static thread_pool pool;
    return pool;
  }

  // Runs fn(part) for part in [0, parts) on up to `parts` threads (the
  // caller runs part 0). Falls back to a serial loop when busy or nested.
  void run(int parts, const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> use(use_mutex_, std::try_to_lock);
    if (parts <= 1 || in_worker() || !use.owns_lock()) {
      for (int p = 0; p < parts; ++p) fn(p);
      return;
    }
    ensure_workers(parts - 1);
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = &fn;
      job_parts_ = parts;
      pending_ = parts - 1;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    std::exception_ptr mine;
    try {
      fn(0);
    } catch (...) {
      mine = std::current_exception();
    }
    std::unique_lock<std::mutex> lk(m_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    job_ = nullptr;
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

  ~thread_pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  static bool& in_worker() {
    thread_local bool flag = false;
    return flag;
  }

  void ensure_workers(int n) {
    while (int(workers_.size()) < n) {
      const int id = int(workers_.size()) + 1;  // part index this worker runs
      workers_.emplace_back([this, id] { loop(id); });
    }
  }

  void loop(int id) {
    in_worker() = true;
    unsigned long seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (id >= job_parts_) continue;
        job = job_;
      }
      std::exception_ptr err;
      try {
        (*job)(id);
      } catch (...) {
        err = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lk(m_);
        if (err && !error_) error_ = err;
        if (--pending_ == 0) done_cv_.notify_one();
      }
    }
  }

  std::mutex use_mutex_;
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  int job_parts_ = 0;
  int pending_ = 0;
  unsigned long generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

inline std::atomic<int>& default_threads() {
  static std::atomic<int> n{int(std::max(1u, std::thread::hardware_concurrency()))};
  return n;
}

// The thread count for a problem of rows x cols multiply-adds (or
// elements): problems below 64K are not worth waking the pool for.
inline int threads_for(std::size_t rows, std::size_t cols, int requested) noexcept {
  return rows * cols < (std::size_t(1) << 16) ? 1 : requested;
}

}  // namespace detail

// Process-wide default thread count for lowbit's kernels and quantizers.
inline void set_num_threads(int n) {
  LOWBIT_CHECK(n >= 1, "set_num_threads", "thread count must be >= 1, got ", n);
  detail::default_threads() = n;
}
inline int num_threads() noexcept { return detail::default_threads(); }

namespace detail {
// grain (0 means 1) and threads (<= 0 means num_threads()) made concrete;
// returns the grain-sized blocks of [0, n) and the threads worth using.
inline std::pair<std::size_t, int> split(std::size_t n, std::size_t& grain, int threads) noexcept {
  if (grain == 0) grain = 1;
  if (threads <= 0) threads = num_threads();
  const std::size_t blocks = (n + grain - 1) / grain;
  return {blocks, int(std::min<std::size_t>(std::size_t(threads), blocks))};
}
}  // namespace detail

// Calls fn(begin, end) on contiguous sub-ranges of [0, n) whose boundaries
// are multiples of grain; threads <= 0 means num_threads().
template <class F>
void parallel_for(std::size_t n, std::size_t grain, int threads, F&& fn) {
  if (n == 0) return;
  const auto [blocks, parts] = detail::split(n, grain, threads);
  if (parts <= 1) {
    fn(std::size_t(0), n);
    return;
  }
  const std::size_t per = (blocks + std::size_t(parts) - 1) / std::size_t(parts);
  const std::function<void(int)> part = [&](int p) {
    const std::size_t b = std::min(n, std::size_t(p) * per * grain);
    const std::size_t e = std::min(n, (std::size_t(p) + 1) * per * grain);
    if (b < e) fn(b, e);
  };
  detail::thread_pool::instance().run(parts, part);
}

// Calls fn(begin, end) on the chunks [c * grain, (c + 1) * grain) of
// [0, n), each once, claimed one at a time from a shared counter by up to
// `threads` threads; threads <= 0 means num_threads(). For work whose
// chunks are independent of each other and of the thread that runs them
// (decompression): a thread that is slow, descheduled or woken late takes
// fewer chunks instead of holding up the call, which parallel_for's fixed
// parts cannot do. fn runs many times per thread, so per-call setup in it
// is paid per chunk. After a chunk throws, unclaimed chunks are skipped and
// the first exception is rethrown.
template <class F>
void parallel_chunks(std::size_t n, std::size_t grain, int threads, F&& fn) {
  if (n == 0) return;
  // Named variables, not a structured binding: the lambda below captures them (C++17).
  const std::pair<std::size_t, int> split = detail::split(n, grain, threads);
  const std::size_t chunks = split.first;
  const int parts = split.second;
  if (parts <= 1) {
    for (std::size_t c = 0; c < chunks; ++c) fn(c * grain, std::min(n, (c + 1) * grain));
    return;
  }
  std::atomic<std::size_t> next{0};
  const std::function<void(int)> part = [&](int) {
    for (std::size_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      try {
        fn(c * grain, std::min(n, (c + 1) * grain));
      } catch (...) {
        next.store(chunks, std::memory_order_relaxed);
        throw;
      }
    }
  };
  detail::thread_pool::instance().run(parts, part);
}

}  // namespace lowbit
