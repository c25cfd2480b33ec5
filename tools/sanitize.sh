#!/usr/bin/env bash
# Builds fastconv with AddressSanitizer and UndefinedBehaviorSanitizer (FASTCONV_SANITIZE) into
# a fresh virtual environment and runs the kernel tests under them, on both ISAs: any report
# (out-of-bounds access, use after free, signed overflow, misaligned load...) aborts the test
# process and fails the run. Leak detection is off: CPython itself does not free everything at
# exit (tests/test_leaks.py checks fastconv's memory instead). Usage: bash tools/sanitize.sh
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
pip install -q "$src" -Ccmake.define.FASTCONV_SANITIZE=ON
pip install -q "pytest>=7"
cp -r "$src/tests" "$work/tests"
cd "$work"
LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD
# Reports go to files (pytest's capture would swallow them with the aborted process).
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$work/report"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$work/report"
python -c "import fastconv; fastconv.show_config()"
core="$(python -c 'import fastconv._core as c; print(c.__file__)')"
# The control: the module really is instrumented.
symbols="$(nm -D "$core")"
grep -q "__asan_report_load" <<<"$symbols" || { echo "sanitize: $core has no ASan hooks"; exit 1; }
grep -q "__ubsan_handle" <<<"$symbols" || { echo "sanitize: $core has no UBSan hooks"; exit 1; }
status=0
python -m pytest -q -p no:cacheprovider tests/test_conv.py tests/test_winograd.py \
  tests/test_pool.py tests/test_matmul.py tests/test_activation.py tests/test_bias_grad.py \
  tests/test_nonfinite.py tests/test_out.py tests/test_errors.py tests/test_threads_isa.py \
  tests/test_coexistence.py tests/test_optim.py || status=$?
if compgen -G "$work/report*" >/dev/null; then
  cat "$work"/report*
  echo "sanitize: sanitizer reports above"
  exit 1
fi
[ "$status" -eq 0 ] || { echo "sanitize: the tests failed (exit $status)"; exit 1; }
echo "sanitize: no AddressSanitizer or UndefinedBehaviorSanitizer report"
