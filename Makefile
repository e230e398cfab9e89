# robobench: `make test` and `make demo` set everything up themselves (system packages, .venv, locked deps).
SHELL := /bin/bash
BIN := .venv/bin
# optional dependency groups (requirements-<name>.txt); `make setup EXTRAS=` for the lean set
EXTRAS ?= ray
export EXTRAS
STAMP := .venv/.robobench-installed$(if $(EXTRAS),-$(subst $(eval) ,-,$(EXTRAS)))
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup libero system test nbcheck nbtest pytest lab doctor lock demo help

help:
	@echo "make test    set up (first time: system packages, .venv, pinned deps), check notebooks, run all tests"
	@echo "make demo    set up, then run the quickstart notebook end to end on CPU"
	@echo "make lab     open JupyterLab at the repository root (nbs/, papermill_runs/)"
	@echo "make doctor  can this machine run each part?"
	@echo "make lock    re-resolve requirements.in into requirements.lock"
	@echo "make libero  LIBERO's own environment .venv-libero (~2 GB; part of make setup)"

system:
	@bash scripts/setup_system.sh

$(STAMP): requirements.lock $(wildcard requirements-*.txt) overrides.txt setup.py settings.ini scripts/setup_venv.sh
	@rm -f .venv/.robobench-installed*
	@bash scripts/setup_venv.sh
	@touch $@

LIBERO_STAMP := .venv-libero/.robobench-installed
$(LIBERO_STAMP): $(STAMP) requirements-libero.lock scripts/setup_libero.sh robobench/envs_libero_worker.py
	@bash scripts/setup_libero.sh
	@touch $@

setup: system $(STAMP) $(LIBERO_STAMP)

libero: $(LIBERO_STAMP)   # LIBERO's own environment only (part of `make setup`)

lock:
	$(BIN)/uv pip compile requirements.in --override overrides.txt --python-version 3.12 -o requirements.lock

# notebooks are the source: nbdev_clean and nbdev_export must leave the committed tree unchanged
nbcheck: setup
	@$(BIN)/nbdev_clean
	@if [ -n "$$(git status --porcelain -- nbs)" ]; then echo "nbdev_clean changed notebooks (commit them cleaned):"; git status --short -- nbs; exit 1; fi
	@$(BIN)/nbdev_export
	@if [ -n "$$(git status --porcelain -- robobench nbs pyproject.toml)" ]; then echo "nbdev_export changed robobench/ (export and commit):"; git status --short -- robobench; git diff --stat; exit 1; fi
	@echo "nbdev_clean / nbdev_export: no diff"
	@$(BIN)/python scripts/lint.py
	@$(BIN)/python scripts/import_cycles.py && echo "import cycles: none"
	@$(BIN)/python scripts/sim_names.py

nbtest: setup
	$(BIN)/nbdev_test --n_workers 2 --flags "slow sim"   # every cell, the simulator and slow ones included

pytest: setup
	$(BIN)/python -m pytest

test: setup nbcheck nbtest pytest

doctor: setup
	$(BIN)/robobench doctor

lab: setup
	$(BIN)/jupyter lab --notebook-dir=. $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

demo: setup
	$(BIN)/robobench run quickstart --name demo
