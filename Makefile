# Two entry points (see README): `make run` and `make test`. Each creates .venv and
# installs what it needs; torch goes in first, pinned, so pip never pulls a CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test test-fast lint typecheck pytest bench redis demo-model clean system-run system-test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[worker,bot,dev,bench]"
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

redis:
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
	  redis-server --daemonize yes --port 6379 --save "" --appendonly no
	@for i in 1 2 3 4 5 6 7 8 9 10; do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && exit 0; sleep 0.5; done; \
	  echo "redis did not start on 127.0.0.1:6379" >&2; exit 1

# System packages (redis-server; chromium and chromium-driver for the browser tests):
# installed with apt-get where possible, else named (scripts/setup-system.sh).
system-run:
	@scripts/setup-system.sh run

system-test:
	@scripts/setup-system.sh test

# Without DISCORD_TOKEN: the sandbox (python -m sandbox) with the demo model, in a browser.
run: $(STAMP) system-run
	scripts/run.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) system-test redis
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

# The edit-test loop: lint, types and the tests not marked slow (well under a minute).
test-fast: $(STAMP) redis
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -m "not slow"

bench: $(STAMP) redis
	$(PY) -m bench.batching
	$(PY) -m bench.intake
	$(PY) -m bench.queue

# 2 torch threads unless told otherwise: the thread count changes float summation order,
# and 2 is what reproduces the committed checkpoint bit for bit.
demo-model: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) scripts/train_demo_model.py --out models/palicord-tiny

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
