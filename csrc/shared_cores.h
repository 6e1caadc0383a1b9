// shared_cores.h -- whether a small parallel region is worth forking right now, on a machine whose cores other
// processes also use.
//
// Every OpenMP region ends in a join that waits for all of its threads. When another process holds the core
// that one of ours needs, that thread runs only when the scheduler gives it a time slice, and the caller waits
// for it although it has done all the (dynamically handed out) work itself: measured on the 2-core Zen 3 with
// one other busy process, 4-8 ms per region, against 0.1 ms of work for a decode GEMV of the bench thinker.
// A decode step has dozens of such regions. So the caller times its wait at each join; a wait far beyond any
// task's length (kBusyWaitNs) marks the cores busy, and for a while every guarded region runs on the calling
// thread alone (its `if` clause is false): kMinSoloNs after an isolated wait, twice the last stretch when the
// first region after it waited again (up to kMaxSoloNs). A blip then costs a stretch of one-thread speed about
// as long as one wait, and a process that keeps the other core busy costs one wait per kMaxSoloNs. Results never
// depend on the thread count (the kernels' tests check it), so this changes timing only.
//
// Use (a region whose loop hands out its tasks dynamically and ends in the region's join):
//     JoinTimer join(work >= threshold);
//     #pragma omp parallel if (join.fork())
//     {
//     #pragma omp for schedule(dynamic, 1) nowait
//       for (...) { ... }
//       join.arrived();   // (a barrier inside the region: arrived(); #pragma omp barrier; resumed();)
//     }
// Guarded: the decode kernels (gemv, gemv_many in gemm_kernels.inc, moe_one_token in moe_kernels.inc).
// Measured (2-core Zen 3 shared with other engineers' jobs; one Python process loading the former build and this
// one, the decode GEMVs and one-token MoE of the bench thinker streamed from DRAM, calls alternating between the
// builds, 16 steps; mean ms per step of q/k/v + o_proj + MoE over 8 layers + lm_head): while another process
// kept a core busy, float32 218 -> 34, bf16 248 -> 24; in a quiet stretch right after, float32 13.0 -> 13.9,
// bf16 8.4 -> 8.1.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#ifdef OMNIREF_OPENMP
#include <omp.h>
#endif

namespace omni {
// A caller that waited longer than this at a join saw a descheduled thread: a task of the guarded kernels is
// 10-50 us, a scheduler time slice milliseconds.
constexpr int64_t kBusyWaitNs = 1000000;
// How long the guarded regions then run alone: from kMinSoloNs (about one decode step), doubling while the cores
// stay busy, to kMaxSoloNs.
constexpr int64_t kMinSoloNs = 20000000, kMaxSoloNs = 640000000;

inline int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
// Shared by every kernel in the module: guarded regions run on the calling thread until solo_until_ns
// (steady_ns), a stretch that lasted solo_ns.
inline std::atomic<int64_t> solo_until_ns{0}, solo_ns{0};

// The caller waited a time slice at a join: run alone for a while (see the top of this file).
inline void cores_busy(int64_t now) {
  const int64_t last = solo_ns.load(std::memory_order_relaxed);
  const bool again = now - solo_until_ns.load(std::memory_order_relaxed) < last;  // soon after the last stretch
  const int64_t next = again ? std::min(2 * last, kMaxSoloNs) : kMinSoloNs;
  solo_ns.store(next, std::memory_order_relaxed);
  solo_until_ns.store(now + next, std::memory_order_relaxed);
}

class JoinTimer {
 public:
  explicit JoinTimer(bool worth) : fork_(worth && steady_ns() >= solo_until_ns.load(std::memory_order_relaxed)) {}
  bool fork() const { return fork_; }
  // Called by every thread of the region after its last task before a barrier or the join: the caller (thread 0)
  // notes the time. After an explicit `#pragma omp barrier`, `resumed()` adds the caller's wait there.
  void arrived() {
    if (caller()) arrived_ns_ = steady_ns();
  }
  void resumed() {
    if (caller()) waited_ns_ += steady_ns() - arrived_ns_;
  }
  ~JoinTimer() {
    if (!fork_ || arrived_ns_ == 0) return;
    const int64_t now = steady_ns();
    if (waited_ns_ + (now - arrived_ns_) > kBusyWaitNs) cores_busy(now);
  }

 private:
  bool caller() const {
#ifdef OMNIREF_OPENMP
    return fork_ && omp_get_thread_num() == 0;
#else
    return false;
#endif
  }
  bool fork_;
  int64_t arrived_ns_ = 0, waited_ns_ = 0;
};
}  // namespace omni
