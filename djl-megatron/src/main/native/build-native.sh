#!/usr/bin/env bash
# Builds libdjl_torch.so against the libtorch found here and lays out the directory DJL loads it from:
# libdjl_torch.so plus symlinks to the libtorch libraries (DJL loads every .so in that directory, so it must
# not be a system lib dir). Prints the environment that points DJL at it.
#
#   build-native.sh [output-dir]        default: <repo>/build/native
#
# libtorch, first found: $TORCH_DIR (a libtorch or pip torch directory, or a directory holding
# TorchConfig.cmake); the torch of `python3`; Debian's libtorch-dev. JNI headers: $JAVA_HOME or the javac on
# the PATH ($JNI_INCLUDE_DIR on hosts without a JDK). Rebuilds only when sources or libtorch changed.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$src/../../../.." && pwd)
out=${1:-$repo/build/native}
work=$repo/build/native-cmake   # outside $out: DJL walks $out recursively

say() { echo "build-native: $*" >&2; }

# Sets torch_cmake (the directory of TorchConfig.cmake) and torch_root from a candidate directory.
use_torch_dir() {
  local d=$1
  for c in "$d" "$d/share/cmake/Torch" "$d/lib/cmake/Torch"; do
    if [[ -f $c/TorchConfig.cmake ]]; then
      torch_cmake=$(cd "$c" && pwd)
      torch_root=$d
      return 0
    fi
  done
  return 1
}

torch_cmake=""
torch_root=""
if [[ -n ${TORCH_DIR:-} ]]; then
  use_torch_dir "$TORCH_DIR" || { say "no TorchConfig.cmake under TORCH_DIR=$TORCH_DIR"; exit 1; }
elif py_torch=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null) && use_torch_dir "$py_torch"; then
  :
elif use_torch_dir /usr/lib/x86_64-linux-gnu/cmake/Torch; then
  :
else
  say "libtorch not found: set TORCH_DIR, install torch for python3, or apt-get install libtorch-dev"
  exit 1
fi

# The release version (x.y.z, as DJL's PYTORCH_VERSION wants it) and CUDA flavor of that libtorch.
cuda=""
if [[ -f $torch_root/version.py ]]; then  # pip torch: __version__ = '2.11.0+cu130', cuda = '13.0'
  version=$(sed -n "s/^__version__ = '\([0-9.]*\).*/\1/p" "$torch_root/version.py")
  cuda=$(sed -n "s/^cuda = '\([0-9.]*\)'.*/\1/p" "$torch_root/version.py")
elif [[ -f $torch_root/build-version ]]; then  # libtorch zip: 2.7.1+cu128
  version=$(sed 's/[^0-9.].*//' "$torch_root/build-version")
elif [[ $torch_cmake == /usr/lib/* ]] && dpkg_version=$(dpkg-query -W -f='${Version}' libtorch-dev 2>/dev/null); then
  version=${dpkg_version%%[+~-]*}  # Debian's headers say 1.13.0 for its 1.13.1 package
else
  version=$(sed -n 's/^#define TORCH_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)/\2/p' \
    "$(dirname "$(dirname "$(dirname "$torch_cmake")")")/include/torch/csrc/api/include/torch/version.h" | paste -sd.)
fi

# Where the libtorch shared libraries are (Debian: the cmake dir's grandparent; pip and zip: lib/).
if [[ -f $torch_root/lib/libtorch.so ]]; then
  lib_dir=$torch_root/lib
else
  lib_dir=$(cd "$torch_cmake/../.." && pwd)
fi
[[ -f $lib_dir/libtorch.so ]] || { say "libtorch.so not found in $lib_dir"; exit 1; }
if [[ -f $lib_dir/libtorch_cuda.so && -z $cuda ]]; then
  cuda=unknown
fi
flavor=cpu
[[ -n $cuda ]] && flavor=cu${cuda//./}

stamp=$work/sources.sha256
fingerprint=$( (cat "$src"/*.cc "$src"/*.h "$src"/CMakeLists.txt; echo "$torch_cmake $version") | sha256sum | cut -d' ' -f1)
if [[ -f $out/libdjl_torch.so && -f $stamp && $(cat "$stamp") == "$fingerprint" ]]; then
  say "up to date: $out/libdjl_torch.so"
else
  say "building against libtorch $version ($flavor) from $torch_cmake"
  start=$(date +%s)
  mkdir -p "$work"
  log=$work/build.log
  cmake -S "$src" -B "$work" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_cmake" \
    -DDJLM_LIBTORCH_VERSION="$version" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  cmake --build "$work" -j"$(nproc)" >>"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  mkdir -p "$out"
  cp "$work/libdjl_torch.so" "$out/libdjl_torch.so.tmp"
  mv "$out/libdjl_torch.so.tmp" "$out/libdjl_torch.so"
  echo "$fingerprint" >"$stamp"
  say "built in $(($(date +%s) - start)) s"
fi

for lib in libtorch.so libtorch_cpu.so libc10.so libtorch_cuda.so libc10_cuda.so; do
  if [[ -f $lib_dir/$lib ]]; then
    ln -sfn "$lib_dir/$lib" "$out/$lib"
  else
    rm -f "$out/$lib"
  fi
done

echo "export PYTORCH_LIBRARY_PATH=$out PYTORCH_VERSION=$version PYTORCH_FLAVOR=$flavor"
