// moe.cpp -- the fused mixture-of-experts kernel (moe_kernels.inc, compiled per instruction set), the scalar
// reference beside it, and the Python entry point. Shapes: see moe.h.
//   moe(x [L, H] f32, local [L, k] int64, mix [L, k] f32, gate: list of U [I_u, H], up: list of U [I_u, H],
//       down: list of U [H, I_u] (all float32, or all uint16 bfloat16 bits), naive=False) -> out [L, H] f32
#include "moe.h"
#include "gemm.h"
#include "bindings.h"
#include "cpu.h"
#include "simd.h"
#include "shared_cores.h"
#include <memory>
#include <type_traits>
#include <vector>
#ifdef OMNIREF_OPENMP
#include <omp.h>
#endif

namespace omni {
// (token, slot) pairs grouped by expert, shared by every instruction set's kernel.
struct MoeGroups {
  std::vector<int64_t> start;  // [U+1] expert u owns grouped pairs [start[u], start[u+1])
  std::vector<int64_t> token;  // [P] the token of each grouped pair (ascending within an expert)
  std::vector<int64_t> pair;   // [L*k] grouped position of pair (t, j)
  std::vector<int64_t> hoff;   // [U+1] offset of expert u's activations [n_u, I_u] in the h buffer
};
}  // namespace omni

#define OMNI_KERNELS "gemm_core.inc"
#define OMNI_KERNELS_2 "moe_kernels.inc"
#include "isa_instantiate.h"

namespace omni {
namespace {
// Counting sort of the L*k pairs by local expert id (stable: tokens stay ascending within an expert).
template <class WT>
MoeGroups group(const MoeCall<WT>& c) {
  MoeGroups g;
  const int64_t P = c.L * c.k;
  g.start.assign(size_t(c.U + 1), 0);
  for (int64_t p = 0; p < P; ++p) ++g.start[size_t(c.local[p] + 1)];
  for (int64_t u = 0; u < c.U; ++u) g.start[size_t(u + 1)] += g.start[size_t(u)];
  g.token.resize(size_t(P));
  g.pair.resize(size_t(P));
  std::vector<int64_t> fill(g.start.begin(), g.start.end() - 1);
  for (int64_t p = 0; p < P; ++p) {
    const int64_t at = fill[size_t(c.local[p])]++;
    g.token[size_t(at)] = p / c.k;
    g.pair[size_t(p)] = at;
  }
  g.hoff.assign(size_t(c.U + 1), 0);
  for (int64_t u = 0; u < c.U; ++u)
    g.hoff[size_t(u + 1)] = g.hoff[size_t(u)] + (g.start[size_t(u + 1)] - g.start[size_t(u)]) * c.inter[u];
  return g;
}

template <class WT>
void dispatch(const MoeCall<WT>& c) {
  if (c.L <= 0 || c.H <= 0) return;
  const MoeGroups g = group(c);
  OMNI_DISPATCH(moe(c, g));
}

// Reference: token by token, its slots in ascending expert order, each product a plain k-ordered dot product.
template <class WT>
void naive(const MoeCall<WT>& c) {
  const int64_t H = c.H;
  std::vector<float> hidden;
  for (int64_t t = 0; t < c.L; ++t) {
    float* o = c.out + t * H;
    for (int64_t i = 0; i < H; ++i) o[i] = 0.f;
    std::vector<int64_t> slots(size_t(c.k));
    for (int64_t j = 0; j < c.k; ++j) slots[size_t(j)] = j;
    std::stable_sort(slots.begin(), slots.end(),
                     [&](int64_t a, int64_t b) { return c.local[t * c.k + a] < c.local[t * c.k + b]; });
    for (int64_t j : slots) {
      const int64_t u = c.local[t * c.k + j], I = c.inter[u];
      const float* x = c.x + t * H;
      hidden.assign(size_t(I), 0.f);
      for (int64_t n = 0; n < I; ++n) {
        float gs = 0.f, us = 0.f;
        for (int64_t q = 0; q < H; ++q) {
          gs += x[q] * widen(c.gate[u][n * H + q]);
          us += x[q] * widen(c.up[u][n * H + q]);
        }
        hidden[size_t(n)] = gs * (1.f / (1.f + std::exp(-gs))) * us;
      }
      for (int64_t n = 0; n < H; ++n) {
        float s = 0.f;
        for (int64_t q = 0; q < I; ++q) s += hidden[size_t(q)] * widen(c.down[u][n * I + q]);
        o[n] += c.mix[t * c.k + j] * s;
      }
    }
  }
}

// Second wall behind omniref/_native.py: dtypes, shapes and index ranges, so a bad call raises instead of
// reading out of bounds. Returns the weight pointers of one kind (WT) and the expert widths.
template <class WT>
void collect(const py::list& mats, const char* name, bool transposed, int64_t H, std::vector<const WT*>& ptr,
             std::vector<int64_t>& inter) {
  for (size_t u = 0; u < mats.size(); ++u) {
    py::array a = py::reinterpret_borrow<py::array>(mats[u]);
    check_array<WT>(a, name, 2);
    const int64_t I = transposed ? a.shape(1) : a.shape(0), Hin = transposed ? a.shape(0) : a.shape(1);
    if (Hin != H)
      throw py::value_error(std::string("moe: ") + name + "[" + std::to_string(u) + "] " + shape_str(a) +
                            " does not match hidden size H=" + std::to_string(H));
    if (inter.size() <= u) inter.push_back(I);
    else if (inter[u] != I)
      throw py::value_error(std::string("moe: ") + name + "[" + std::to_string(u) + "] " + shape_str(a) +
                            " disagrees with gate's expert width " + std::to_string(inter[u]));
    ptr.push_back(static_cast<const WT*>(a.data()));
  }
}

// packed: None, or a list of U entries, each None or (gate, up, down) pre-packed by pack_weight (1-D float32 of
// exactly packed_weight_size for that weight's shape on the current instruction set).
std::vector<const float*> collect_packed(const py::object& packed, const std::vector<int64_t>& inter, int64_t H,
                                         int64_t U) {
  std::vector<const float*> ptr;
  if (packed.is_none()) return ptr;
  if (!py::isinstance<py::list>(packed)) throw py::type_error("moe: packed must be None or a list");
  const py::list lst = py::reinterpret_borrow<py::list>(packed);
  if (int64_t(lst.size()) != U)
    throw py::value_error("moe: packed must have one entry per expert (" + std::to_string(U) + "), got " +
                          std::to_string(lst.size()));
  ptr.assign(size_t(3 * U), nullptr);
  for (int64_t u = 0; u < U; ++u) {
    if (lst[size_t(u)].is_none()) continue;
    if (!py::isinstance<py::tuple>(lst[size_t(u)]))
      throw py::type_error("moe: packed[" + std::to_string(u) + "] must be None or a (gate, up, down) tuple");
    const py::tuple t = py::reinterpret_borrow<py::tuple>(lst[size_t(u)]);
    if (t.size() != 3) throw py::value_error("moe: packed[" + std::to_string(u) + "] must be (gate, up, down)");
    const int64_t want[3] = {packed_weight_size(inter[size_t(u)], H), packed_weight_size(inter[size_t(u)], H),
                             packed_weight_size(H, inter[size_t(u)])};
    for (int i = 0; i < 3; ++i) {
      py::array a = py::reinterpret_borrow<py::array>(t[size_t(i)]);
      check_array<float>(a, "packed weight", 1);
      if (a.shape(0) != want[i])
        throw py::value_error("moe: packed[" + std::to_string(u) + "][" + std::to_string(i) + "] has " +
                              std::to_string(a.shape(0)) + " floats, the current instruction set's layout needs " +
                              std::to_string(want[i]));
      ptr[size_t(3 * u + i)] = static_cast<const float*>(a.data());
    }
  }
  return ptr;
}

template <class WT>
py::array_t<float> run(const py::array& x, const py::array& local, const py::array& mix, const py::list& gate,
                       const py::list& up, const py::list& down, bool use_naive, const py::object& packed) {
  const int64_t L = x.shape(0), H = x.shape(1), k = local.shape(1), U = int64_t(gate.size());
  std::vector<const WT*> g, u, d;
  std::vector<int64_t> inter;
  collect<WT>(gate, "gate", false, H, g, inter);
  collect<WT>(up, "up", false, H, u, inter);
  collect<WT>(down, "down", true, H, d, inter);
  const int64_t* lp = static_cast<const int64_t*>(local.data());
  for (int64_t p = 0; p < L * k; ++p)
    if (lp[p] < 0 || lp[p] >= U)
      throw py::value_error("moe: local expert index " + std::to_string(lp[p]) + " outside [0, " +
                            std::to_string(U) + ")");
  if (k > 64) throw py::value_error("moe: at most 64 experts per token, got k=" + std::to_string(k));
  py::array_t<float> out({L, H});
  std::vector<const float*> pk;
  if (std::is_same<WT, float>::value) pk = collect_packed(packed, inter, H, U);
  MoeCall<WT> c{static_cast<const float*>(x.data()), lp, static_cast<const float*>(mix.data()), g.data(),
                u.data(), d.data(), inter.data(), pk.empty() ? nullptr : pk.data(), out.mutable_data(), L, H, k, U};
  {
    py::gil_scoped_release nogil;
    use_naive ? naive(c) : dispatch(c);
  }
  return out;
}

py::array_t<float> moe_py(const py::array& x, const py::array& local, const py::array& mix, const py::list& gate,
                          const py::list& up, const py::list& down, bool use_naive, const py::object& packed) {
  check_array<float>(x, "x", 2);
  check_array<int64_t>(local, "local", 2);
  check_array<float>(mix, "mix", 2);
  if (local.shape(0) != x.shape(0) || mix.shape(0) != x.shape(0) || mix.shape(1) != local.shape(1))
    throw py::value_error("moe: x " + shape_str(x) + ", local " + shape_str(local) + " and mix " +
                          shape_str(mix) + " must be [L, H], [L, k], [L, k]");
  if (up.size() != gate.size() || down.size() != gate.size())
    throw py::value_error("moe: gate, up and down must list the same experts, got " +
                          std::to_string(gate.size()) + ", " + std::to_string(up.size()) + ", " +
                          std::to_string(down.size()));
  bool bf16 = false;
  if (gate.size() > 0) bf16 = py::reinterpret_borrow<py::array>(gate[0]).dtype().is(py::dtype::of<uint16_t>());
  return bf16 ? run<uint16_t>(x, local, mix, gate, up, down, use_naive, packed)
              : run<float>(x, local, mix, gate, up, down, use_naive, packed);
}
}  // namespace

void register_moe(py::module_& m) {
  m.def("moe", &moe_py, py::arg("x"), py::arg("local"), py::arg("mix"), py::arg("gate"), py::arg("up"),
        py::arg("down"), py::arg("naive") = false, py::arg("packed") = py::none(),
        "out[L,H] = sum_j mix[t,j] * down_u(silu(gate_u x_t) * up_u x_t), u = local[t,j], ascending u");
}
}  // namespace omni
