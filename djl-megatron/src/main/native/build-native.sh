#!/usr/bin/env bash
# Builds libdjl_torch.so against the libtorch found here and lays out the directory DJL loads it from:
# libdjl_torch.so plus symlinks to the libtorch libraries (DJL loads every .so in that directory, so it must
# not be a system lib dir). Prints the environment that points DJL at it.
#
#   build-native.sh [output-dir]        default: <repo>/build/native
#
# libtorch, first found: $TORCH_DIR (a libtorch or pip torch directory, or a directory holding
# TorchConfig.cmake); the torch of `python3`; Debian's libtorch-dev. JNI headers: $JAVA_HOME or the javac on
# the PATH ($JNI_INCLUDE_DIR on hosts without a JDK). CUDA headers, for a libtorch with CUDA: $CUDA_HOME or
# /usr/local/cuda*. Builds with CMake, or with g++ alone where there is no cmake (DJLM_NATIVE_BUILDER=cmake|gxx
# chooses). Rebuilds only when sources or libtorch changed.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$src/../../../.." && pwd)
out=${1:-$repo/build/native}
work=$repo/build/native-build   # outside $out: DJL walks $out recursively

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
if [[ -f $torch_root/version.py ]]; then  # pip torch: __version__ = '2.11.0+cu130', cuda: Optional[str] = '13.0'
  version=$(sed -n "s/^__version__[^=]*= *['\"]\([0-9.]*\).*/\1/p" "$torch_root/version.py")
  cuda=$(sed -n "s/^cuda[^=]*= *['\"]\([0-9.]*\)['\"].*/\1/p" "$torch_root/version.py")
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

# A directory holding cuda_runtime_api.h, for a libtorch with CUDA (its c10/cuda headers include it).
find_cuda_include() {
  local c inc
  for c in "${CUDA_HOME:-}" "${CUDAToolkit_ROOT:-}" /usr/local/cuda /usr/local/cuda-* "$torch_root/../nvidia/cuda_runtime"; do
    for inc in "$c/include" "$c/targets/x86_64-linux/include"; do
      [[ -f $inc/cuda_runtime_api.h ]] && { echo "$inc"; return 0; }
    done
  done
  return 1
}

build_cmake() {
  local args=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_cmake" -DDJLM_LIBTORCH_VERSION="$version")
  if [[ -n $cuda ]] && cuda_inc=$(find_cuda_include); then
    args+=(-DCUDAToolkit_ROOT="$(dirname "$cuda_inc")")
  fi
  cmake -S "$src" -B "$work" "${args[@]}" >"$log" 2>&1 &&
    cmake --build "$work" -j"$(nproc)" >>"$log" 2>&1
}

# The same build without CMake (hosts with a compiler and libtorch but no cmake).
build_gxx() {
  local inc=/usr/include
  [[ -d $(dirname "$lib_dir")/include/torch ]] && inc=$(dirname "$lib_dir")/include
  local jni=${JNI_INCLUDE_DIR:-}
  if [[ -z $jni ]]; then
    local jdk=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")}
    jni=$jdk/include
  fi
  [[ -f $jni/jni.h ]] || { say "jni.h not found: set JAVA_HOME or JNI_INCLUDE_DIR"; return 1; }
  local abi
  abi=$(sed -n 's/.*\(-D_GLIBCXX_USE_CXX11_ABI=[01]\).*/\1/p' "$torch_cmake/TorchConfig.cmake" | head -1)
  local native_version
  native_version=$(sed -n 's/^project(djl_torch VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
  local flags=(-O2 -std=c++17 -fPIC -fvisibility=hidden -fvisibility-inlines-hidden ${abi:+"$abi"}
    -DDJLM_NATIVE_VERSION="\"$native_version\"" -DDJLM_LIBTORCH_VERSION="\"$version\""
    -I"$inc" -I"$inc/torch/csrc/api/include" -I"$jni" -I"$jni/linux")
  local libs=(-ltorch -ltorch_cpu -lc10)
  if [[ -n $cuda ]]; then
    local cuda_inc
    cuda_inc=$(find_cuda_include) || { say "cuda_runtime_api.h not found: set CUDA_HOME"; return 1; }
    flags+=(-DDJLM_WITH_CUDA -I"$cuda_inc")
    libs+=(-ltorch_cuda -lc10_cuda)
  fi
  mkdir -p "$work/gxx"
  # shellcheck disable=SC2016
  printf '%s\n' "$src"/*.cc | xargs -P "$(nproc)" -I{} \
    bash -c 'g++ "${@:2}" -c "$1" -o "$0/$(basename "$1" .cc).o"' "$work/gxx" {} "${flags[@]}" >"$log" 2>&1 &&
    g++ -shared -o "$work/libdjl_torch.so" "$work"/gxx/*.o -L"$lib_dir" -Wl,-rpath,"$lib_dir" "${libs[@]}" >>"$log" 2>&1
}

stamp=$out/.libdjl_torch.sources.sha256  # not a .so: DJL ignores it
fingerprint=$( (cat "$src"/*.cc "$src"/*.h "$src"/CMakeLists.txt; echo "$torch_cmake $version") | sha256sum | cut -d' ' -f1)
if [[ -f $out/libdjl_torch.so && -f $stamp && $(cat "$stamp") == "$fingerprint" ]]; then
  say "up to date: $out/libdjl_torch.so"
else
  builder=${DJLM_NATIVE_BUILDER:-$(command -v cmake >/dev/null && echo cmake || echo gxx)}
  say "building with $builder against libtorch $version ($flavor) from $torch_cmake"
  start=$(date +%s)
  mkdir -p "$work"
  log=$work/build.log
  "build_$builder" || { cat "$log" >&2; say "build failed (log: $log)"; exit 1; }
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

# pip wheels find their bundled and nvidia-* dependencies through RUNPATH $ORIGIN, which the symlinks in
# $out break (glibc takes $ORIGIN from the path a library was loaded by): those directories go on
# LD_LIBRARY_PATH instead.
origin_dirs() {
  local lib real
  for lib in libtorch.so libtorch_cpu.so libc10.so libtorch_cuda.so libc10_cuda.so; do
    [[ -f $lib_dir/$lib ]] || continue
    real=$(dirname "$(readlink -f "$lib_dir/$lib")")
    readelf -d "$lib_dir/$lib" | sed -n 's/.*(R[UN]*PATH).*\[\(.*\)\]/\1/p' | tr ':' '\n' |
      grep -F '$ORIGIN' | sed "s|\$ORIGIN|$real|"
  done | while read -r dir; do [[ -d $dir ]] && (cd "$dir" && pwd); done | awk '!seen[$0]++' | paste -sd:
}

echo "export PYTORCH_LIBRARY_PATH=$out PYTORCH_VERSION=$version PYTORCH_FLAVOR=$flavor"
dependency_dirs=$(origin_dirs)
if [[ -n $dependency_dirs ]]; then
  echo "export LD_LIBRARY_PATH=$dependency_dirs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
fi
