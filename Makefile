# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv bench clean

venv: $(STAMP)

# torch is pinned to the CPU wheel first so that no dependency resolution can pull a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q "transformers==5.24.0" "av==18.1.0" "tokenizers==0.23.3" "safetensors==0.8.0"
	$(PY) -m pip install -q -e ".[models,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tango-prune demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) benchmarks/prune_speed.py

clean:
	rm -rf $(VENV) demo_out build src/*.egg-info
