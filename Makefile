# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch comes first so nothing else can pull a CUDA build; override e.g. TORCH_SPEC="torch==2.5.1".
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.modelport-installed

.PHONY: install test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) examples/demo.py

bench: install
	cd bench && ../$(PY) bench_hf.py

clean:
	rm -rf $(VENV) build src/*.egg-info
