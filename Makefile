# The two commands of the README. Both are idempotent: create .venv, install the pinned
# requirements (the core install, every extra: pyproject's `all`, and the test tools) and the
# project, fetch/convert the bundled assets, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup assets run test test-all clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

assets: setup
	HF_HUB_OFFLINE=1 $(BIN)/testbed assets

run: assets
	HF_HUB_OFFLINE=1 $(BIN)/testbed run scenarios/quickstart.yaml --overwrite

test: assets
	$(BIN)/lint-imports --no-cache
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache
