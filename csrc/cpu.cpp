// cpu.cpp -- run-time CPU feature detection (cpuid via the compiler builtin) and the ISA switch.
#include "cpu.h"
#include <stdexcept>
#ifdef OMNIREF_OPENMP
#include <omp.h>
#endif

namespace omni {
namespace {
Isa detect() {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}
Isa& current() {
  static Isa cur = detect();
  return cur;
}
}  // namespace

Isa best_isa() {
  static Isa best = detect();
  return best;
}
Isa isa() { return current(); }

bool cpu_has(const std::string& f) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  __builtin_cpu_init();
  if (f == "avx2") return __builtin_cpu_supports("avx2");
  if (f == "fma") return __builtin_cpu_supports("fma");
  if (f == "avx512f") return __builtin_cpu_supports("avx512f");
  if (f == "avx512bw") return __builtin_cpu_supports("avx512bw");
  if (f == "avx512vl") return __builtin_cpu_supports("avx512vl");
  if (f == "avx512dq") return __builtin_cpu_supports("avx512dq");
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  if (f == "avx512_bf16") return __builtin_cpu_supports("avx512bf16");
#endif
#endif
  return false;
}

void set_isa(Isa want) {
  if (int(want) > int(best_isa()))
    throw std::invalid_argument(std::string("this CPU does not support the '") + isa_name(want) +
                                "' kernels (best available: '" + isa_name(best_isa()) + "')");
  current() = want;
}

const char* isa_name(Isa i) {
  switch (i) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

int max_threads() {
#ifdef OMNIREF_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
void set_threads(int n) {
  // Bounded so that a typo cannot make the next parallel region try to start a million threads.
  if (n < 1 || n > kMaxThreads)
    throw std::invalid_argument("thread count must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                                std::to_string(n));
#ifdef OMNIREF_OPENMP
  omp_set_num_threads(n);
#endif
}
}  // namespace omni
