#!/usr/bin/env bash
# Proves that the portable (baseline) part of fastconv has no AVX instructions: builds the
# extension's object files with the release flags and disassembles every object that is not
# an ISA file (csrc/*_avx2.cpp, csrc/*_avx512.cpp). Any VEX/EVEX-encoded instruction (a
# v-prefixed mnemonic) or ymm/zmm register there would crash the baseline path on a CPU without
# AVX. As a control, the AVX2 objects must show them. Usage: bash tools/check_baseline_isa.sh
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q pybind11 ninja
export PATH="$work/venv/bin:$PATH"
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$work/venv/bin/python" -DSKBUILD_PROJECT_VERSION=0.0.0 \
  -Dpybind11_DIR="$("$work/venv/bin/python" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$work/build" >/dev/null

avx_lines() {  # instructions of object $1 that need AVX or later
  objdump -d --no-show-raw-insn "$1" | grep -E $'^ +[0-9a-f]+:\t(v[a-z0-9]+ |.*%[yz]mm)' || true
}

status=0
portable=0
while IFS= read -r obj; do
  portable=$((portable + 1))
  found="$(avx_lines "$obj")"
  if [ -n "$found" ]; then
    echo "AVX instructions in the baseline object $obj:"
    echo "$found" | head -5
    status=1
  fi
done < <(find "$work/build" -name '*.o' -path '*_core.dir*')
avx2=0
while IFS= read -r obj; do
  [ -n "$(avx_lines "$obj")" ] && avx2=$((avx2 + 1))
done < <(find "$work/build" -name '*.o' -path '*fastconv_avx2.dir*')
if [ "$portable" -eq 0 ] || [ "$avx2" -eq 0 ]; then
  echo "check_baseline_isa: found $portable baseline objects and $avx2 AVX2 objects with AVX code;"
  echo "expected both (is the object layout of the build what this script assumes?)"
  exit 1
fi
[ "$status" -eq 0 ] && echo "check_baseline_isa: $portable baseline objects, no AVX instruction ($avx2 AVX2 objects have them)"
exit "$status"
