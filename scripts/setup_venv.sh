#!/usr/bin/env bash
# Create .venv with Python 3.12 and install the locked dependency set with uv (+ robobench, editable).
# Idempotent; the Makefile only calls it when the lock, overrides or package metadata changed.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9

find_python() {
  for c in python3.12 "$(pyenv which python3.12 2>/dev/null || true)" /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2]==(3,12)' 2>/dev/null && { command -v "$c"; return; }
  done
  return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2]==(3,12)' 2>/dev/null; then
  py=$(find_python) || { echo "Python 3.12 not found. Install it (e.g. pyenv install 3.12; a .python-version file selects it) and re-run." >&2; exit 1; }
  echo "creating .venv with $py"
  rm -rf .venv
  "$py" -m venv .venv
fi
if [ "$(.venv/bin/uv --version 2>/dev/null | awk '{print $2}')" != "$UV_VERSION" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
# The lock already resolves openpi-client/mink's stale numpy<2 pins through overrides.txt (see requirements.in).
# Optional groups (requirements-<name>.txt) named in $EXTRAS, e.g. EXTRAS=ray.
files=(requirements.lock)
for e in ${EXTRAS:-}; do files+=("requirements-$e.txt"); done
.venv/bin/uv pip sync --python .venv/bin/python --compile-bytecode "${files[@]}"
.venv/bin/uv pip install --python .venv/bin/python --compile-bytecode --no-deps -e .
# a Jupyter kernel for papermill and JupyterLab that runs this venv
.venv/bin/python -m ipykernel install --sys-prefix --name robobench --display-name "robobench (.venv)" >/dev/null
echo "venv ready: $(.venv/bin/python --version), $(.venv/bin/uv pip list --python .venv/bin/python 2>/dev/null | wc -l) packages"
