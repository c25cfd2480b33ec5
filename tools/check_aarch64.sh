#!/usr/bin/env bash
# Compiles the portable C++ kernels (every csrc/*.cpp but the x86 ISA files and the Python
# bindings) for aarch64 with Debian's cross compiler, warnings as errors: the aarch64 wheel
# builds only this path. Installs g++-aarch64-linux-gnu when apt-get can.
# Usage: bash tools/check_aarch64.sh
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
cxx=aarch64-linux-gnu-g++
if ! command -v "$cxx" >/dev/null && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -q g++-aarch64-linux-gnu >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q g++-aarch64-linux-gnu >/dev/null 2>&1; } || true
fi
if ! command -v "$cxx" >/dev/null; then
  echo "check_aarch64: SKIPPED ($cxx not found and apt-get could not install it)"
  exit 0
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
count=0
for f in "$src"/csrc/*.cpp; do
  case "$f" in *_avx2.cpp | *_avx512.cpp | */bindings.cpp) continue ;; esac
  "$cxx" -std=c++17 -O3 -fopenmp -Wall -Wextra -Werror -c "$f" -o "$out/$(basename "$f").o"
  count=$((count + 1))
done
file "$out"/conv.cpp.o | grep -q "ARM aarch64"
echo "check_aarch64: $count portable sources compile for aarch64"
