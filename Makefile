# The two commands: `make demo` (set up + run the default evaluation) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.specalign-installed

.PHONY: demo test install clean

demo: install
	$(VENV)/bin/specalign run

test: install
	$(PY) -m pytest -q

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[local,test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
