#!/usr/bin/env bash
# Build the native extension with AddressSanitizer + UndefinedBehaviorSanitizer into a temporary folder and
# run the kernel tests against it (omniref/_native.py loads the file named by OMNIREF_NATIVE_LIB instead of
# the installed module). Needs cmake, a C++ compiler and pybind11 (pip), like the normal build.
# A few minutes on 2 cores: the build is -O1, the tests are the small shapes of tests/test_kernels.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
build=$(mktemp -d "${TMPDIR:-/tmp}/omniref-asan.XXXXXX")
trap 'rm -rf "$build"' EXIT

# The build tools normally come from pip's isolated build env; install them here if this Python lacks them.
"$PY" -m pybind11 --cmakedir >/dev/null 2>&1 || "$PY" -m pip install -q "pybind11>=2.12"
command -v cmake >/dev/null 2>&1 || "$PY" -m pip install -q "cmake>=3.18"

gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Debug -DOMNIREF_SANITIZE=ON \
      -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >"$build/cmake.log" \
  || { cat "$build/cmake.log"; exit 1; }
cmake --build "$build" -j 2 >"$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 1; }
lib=$(ls "$build"/_C*.so)

# The Python interpreter is not instrumented: the ASan runtime must be loaded first, and libstdc++ with it
# (ASan resolves the real __cxa_throw at start-up; without libstdc++ loaded by then, the first C++ exception
# -- our ValueError/TypeError checks -- aborts). Leak checking is off: the interpreter keeps allocations
# alive at exit.
asan=$(${CXX:-g++} -print-file-name=libasan.so)
stdcxx=$(${CXX:-g++} -print-file-name=libstdc++.so)
export LD_PRELOAD="$asan:$stdcxx${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMNIREF_NATIVE_LIB="$lib"
"$PY" -c "from omniref import _native as n; assert n._C is not None and n._C.sanitized, n.IMPORT_ERROR; print('sanitized extension:', n._C.__file__)"
# test_kernel_edges.py: the crash and edge cases (huge integer arguments, empty dimensions, NaN / inf planted
# in every operand, unaligned buffers) -- the inputs where an out-of-bounds read or an overflow would show.
"$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_moe_kernel.py tests/test_elementwise_kernels.py \
  tests/test_norm_rope_kernels.py tests/test_conv_kernels.py tests/test_kernel_edges.py
