# The two commands: `make demo` (set up + run the default evaluation) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.specalign-installed

.PHONY: demo test check install system llama-cpp clean

demo: install
	$(VENV)/bin/specalign run

# Two workers, each taking whole test files (module fixtures such as llama-server start once): about 9 min on
# 2 cores instead of 14, as most tests wait on processes and sockets.
test: install system llama-cpp
	$(PY) -m pytest -q -n 2 --dist loadfile

# Lint, format, types and the import layering (run by .ci/run before the tests).
check: install
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider tests/test_architecture.py

# Tests drive the system Chromium (the HTML report) and tmux (the terminal review): Debian packages.
system:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v tmux >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then SUDO=""; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; \
	  else echo "note: chromium, chromium-driver or tmux is missing: the tests that need them will be skipped"; exit 0; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver tmux >/dev/null; \
	fi

# llama.cpp's own llama-server (and llama-batched-bench), built from the llama.cpp source inside the
# installed llama-cpp-python's sdist, once, into ~/.cache/specalign/llama.cpp/ (a few minutes on 2 cores).
# Exit 3 means no compiler: the tests that need the server are then skipped with the reason.
llama-cpp: install
	@tools/build-llama-cpp.sh $(PY) >/dev/null || [ $$? -eq 3 ]

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[local,test,curate,serve,dev,anthropic,otel]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
