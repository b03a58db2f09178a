#!/usr/bin/env bash
# Installs vitq's build and test dependencies from Debian 12 packages (idempotent) and
# builds the project into ./build. Run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  ccache                 # compiler cache: a rebuild (or the next CI run on this machine) compiles only what changed
  libdnnl-dev            # oneDNN: FP32 and INT8 GEMM
  ocl-icd-opencl-dev     # dnnl-config.cmake runs find_package(OpenCL REQUIRED) (GPU runtime "OCL") but libdnnl-dev does not depend on it
  libeigen3-dev          # SVD for mixed precision
  libjpeg62-turbo-dev libpng-dev zlib1g-dev
  nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libnlopt-cxx-dev       # derivative-free optimisers (LAPQ)
  libonnx-dev libprotobuf-dev  # ONNX export (vitq export --onnx): ONNX's protobuf classes and checker
  pybind11-dev python3-dev     # the Python module (import vitq; built when present)
  python3-venv python3-setuptools python3-wheel  # pip install . into a venv, offline (tests/python)
  dataset-fashion-mnist  # the bundled model's dataset
  # references for the parity tests and benchmarks (never used by the vitq runtime)
  python3-torch python3-torchvision python3-pil python3-numpy python3-onnx
  libopenblas0-pthread   # without it Debian's torch runs on the reference BLAS
  time                   # /usr/bin/time -v: peak RSS in bench/run_speed.py
  # the sanitizer + fuzzing build (.ci/run, tests/fuzz): clang, its sanitizer/libFuzzer runtimes, its OpenMP
  clang libclang-rt-14-dev libomp-dev
)

if [ "${1:-}" = "--list-packages" ]; then printf '%s\n' "${PACKAGES[@]}"; exit 0; fi

# Supported platform: Debian 12 (bookworm), x86-64. Elsewhere the package names and versions
# (oneDNN 2.6's CMake config, Debian's torch) differ; say so instead of failing in CMake.
. /etc/os-release 2>/dev/null || true
if [ "${ID:-}" != debian ] || [ "${VERSION_ID:-}" != 12 ] || ! command -v dpkg-query >/dev/null; then
  echo "setup: vitq's set-up supports Debian 12 (bookworm) on x86-64; this is ${PRETTY_NAME:-an unknown system}." >&2
  echo "setup: install the equivalents of these Debian packages yourself, then run:" >&2
  echo "setup:   cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build" >&2
  echo "setup: packages: ${PACKAGES[*]}" >&2
  exit 1
fi
if [ "$(dpkg --print-architecture)" != amd64 ]; then
  echo "setup: vitq is built and tested on x86-64 (amd64); this machine is $(dpkg --print-architecture). Continuing: expect untested code paths." >&2
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

# ccache keys on the preprocessed source and the flags (paths relative to the checkout), so a cached
# object is exactly what the compiler would produce.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER_LAUNCHER=ccache \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache "$@"
cmake --build build
