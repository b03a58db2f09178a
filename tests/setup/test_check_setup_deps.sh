#!/usr/bin/env bash
# tools/check_setup_deps.py passes on setup.sh's list as committed, and fails naming the
# package when one the build reads (a linked library, a header, a Python module) is dropped.
#   test_check_setup_deps.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
src=$1 build=$2
command -v dpkg-query >/dev/null && command -v apt-cache >/dev/null \
  || { echo "skip: not a Debian system (no dpkg/apt-cache)"; exit 77; }
check() { /usr/bin/python3 "$src/tools/check_setup_deps.py" --build-dir "$build" "$@" 2>&1; }
fail=0
out=$(check); rc=$?
[ $rc -eq 0 ] || { echo "FAIL: committed list: exit $rc"; echo "$out"; fail=1; }
# package dropped -> the file that gives it away
for case in "ocl-icd-opencl-dev:libOpenCL.so" "libeigen3-dev:/usr/include/eigen3/" \
            "libdnnl-dev:dnnl" "python3-onnx:python module onnx"; do
  pkg=${case%%:*} file=${case#*:}
  out=$(check --omit "$pkg"); rc=$?
  if [ $rc -ne 1 ] || ! grep -q "package $pkg is needed.*$file" <<< "$out"; then
    echo "FAIL: --omit $pkg: exit $rc, expected 1 and a line naming $pkg and $file"; echo "$out"; fail=1
  else
    echo "ok: --omit $pkg -> $(grep -m1 "package $pkg" <<< "$out" | cut -c1-160)"
  fi
done
exit $fail
