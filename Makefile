# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv bench clean lint

venv: $(STAMP)

# torch is pinned to the CPU wheel first so that no dependency resolution can pull a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q "transformers==5.24.0" "av==18.1.0" "tokenizers==0.23.3" "safetensors==0.8.0"
	$(PY) -m pip install -q -e ".[models,test,lint]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tango-prune demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest tests

# Quality gates (CI runs them after the tests): ruff lint + format check, mypy (config in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/prune_speed.py

clean:
	rm -rf $(VENV) demo_out build src/*.egg-info

# Second environment for the lmms-eval plugin (`make test` runs it too): lmms-eval pins av<16 and breaks with
# filelock 4, and its torchvision requirement pulls the CUDA wheel, which breaks every transformers model
# import next to CPU torch, so it is uninstalled (the plugin decodes video with PyAV, never torchvision).
LMMS_VENV  ?= .venv-lmms
LMMS_PY    := $(LMMS_VENV)/bin/python
LMMS_STAMP := $(LMMS_VENV)/.installed

.PHONY: venv-lmms test-lmms clean-lmms

venv-lmms: $(LMMS_STAMP)

$(LMMS_STAMP): pyproject.toml
	test -x $(LMMS_PY) || $(PYTHON) -m venv $(LMMS_VENV)
	$(LMMS_PY) -m pip install -q --upgrade pip
	$(LMMS_PY) -m pip install -q torch==2.13.0
	$(LMMS_PY) -m pip install -q torch==2.13.0 "transformers==5.24.0" "av==15.1.0" "filelock<4" \
	    "tokenizers==0.23.3" "safetensors==0.8.0" -e ".[models,test,lmms-eval]"
	$(LMMS_PY) -m pip uninstall -q -y torchvision
	touch $(LMMS_STAMP)

test-lmms: $(LMMS_STAMP)
	$(LMMS_PY) -m pytest tests/test_lmms_eval*.py

test: test-lmms

clean-lmms:
	rm -rf $(LMMS_VENV)

clean: clean-lmms
