// cpu.h -- which instruction set the kernels use, decided once at import from cpuid, overridable for tests.
//
// Isa::avx512 needs AVX-512F/BW/DQ/VL (+FMA); Isa::avx2 needs AVX2 + FMA; Isa::generic runs anywhere.
// `omni::isa()` is what every kernel's dispatcher switches on; `set_isa` lets tests run each path that the
// machine supports side by side (asking for one it lacks is an error, never an illegal instruction).
#pragma once
#include <string>

namespace omni {
enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };
Isa isa();                       // currently selected
Isa best_isa();                  // widest the CPU supports
bool cpu_has(const std::string& feature);  // "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"
void set_isa(Isa want);          // throws std::invalid_argument if the CPU lacks it
const char* isa_name(Isa i);
int max_threads();               // OpenMP threads the kernels will use (1 without OpenMP)
constexpr int kMaxThreads = 1024;
void set_threads(int n);         // n in [1, kMaxThreads], else std::invalid_argument
}  // namespace omni
