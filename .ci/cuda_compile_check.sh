#!/usr/bin/env bash
# Compile check of the optional CUDA kernels (csrc/cuda/*.cu) when nvcc is present. CI machines have no GPU,
# so this proves the CUDA build compiles and links, and that the module imports and reports "no GPU" cleanly
# instead of crashing; the kernels themselves are tested by tests/test_kernels.py where a GPU is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
if [ -z "$NVCC" ]; then
  echo "nvcc not found: CUDA compile check skipped"
  exit 0
fi
build=$(mktemp -d "${TMPDIR:-/tmp}/omniref-cuda.XXXXXX")
trap 'rm -rf "$build"' EXIT
"$PY" -m pybind11 --cmakedir >/dev/null 2>&1 || "$PY" -m pip install -q "pybind11>=2.12"
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DOMNIREF_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC" \
      -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >"$build/cmake.log" 2>&1 \
  || { tail -40 "$build/cmake.log"; exit 1; }
cmake --build "$build" -j 2 >"$build/build.log" 2>&1 || { tail -60 "$build/build.log"; exit 1; }
lib=$(ls "$build"/_C*.so)
OMNIREF_NATIVE_LIB="$lib" "$PY" -c "
from omniref import _native as n
assert n._C is not None, n.IMPORT_ERROR
print('CUDA build compiled and imports; GPU visible:', n.cuda_available())"
