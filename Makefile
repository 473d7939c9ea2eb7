# Set-up and entry points. `make demo` and `make test` each build .venv from nothing when it is missing
# or older than requirements.txt / pyproject.toml, so they are the only two commands a fresh machine needs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
KERNEL := pneumothorax
pin     = $(shell grep -E '^$(1)==' requirements.txt)
OUTPUTS ?= $(or $(PNEUMO_OUTPUTS_DIR),outputs)
TB_PORT ?= 6006

# mmcv's setup.py compiles its CUDA kernels whenever torch sees a GPU; that needs a CUDA toolkit matching
# torch's and a long nvcc build, and the UNet uses none of them. So CUDA is hidden from the build (CPU ops
# only, what mmseg needs to import) unless MMCV_CUDA=1 asks for the kernels: `make venv MMCV_CUDA=1`.
MMCV_CUDA ?= 0
# PyPI's Linux torch is a CUDA build; a node whose driver is older than that CUDA needs another wheel index:
# `make venv TORCH_INDEX=https://download.pytorch.org/whl/cu126` (nvidia-smi shows the driver's CUDA).
TORCH_INDEX ?=
ifeq ($(MMCV_CUDA),1)
MMCV_BUILD_ENV := FORCE_CUDA=1
else
MMCV_BUILD_ENV := env -u FORCE_CUDA CUDA_VISIBLE_DEVICES=
endif

.PHONY: venv demo test test-fast lint format hooks test-slurm lab tensorboard sweep report benchmark notebooks clean-outputs help

help:
	@echo "make demo       generate the demo dataset and run the whole pipeline on it (CPU, minutes)"
	@echo "make test       run the whole test suite (what CI runs)"
	@echo "make test-fast  the unit lane: every test that trains, runs a notebook or the demo left out (minutes)"
	@echo "make lint       ruff check and ruff format --check (what tests/test_lint.py asserts)"
	@echo "make format     ruff format, ruff check --fix, and the notebooks re-paired with their py twins"
	@echo "make hooks      install the pre-commit hooks (ruff, jupytext --sync, notebook outputs stripped)"
	@echo "make test-slurm the SLURM sweep on a one-node cluster on localhost (needs slurm-wlm, munge; root)"
	@echo "make tensorboard TensorBoard on outputs/runs/ (port TB_PORT=6006)"
	@echo "make lab        JupyterLab on notebooks/ with the project's kernel"
	@echo "make sweep      03_train once per learning rate (full-data defaults, GPU node)"
	@echo "make report     the whole pipeline with the full-data defaults (pipeline/*.yaml)"
	@echo "make benchmark  benchmarks/prepare, benchmarks/train and benchmarks/evaluate"
	@echo "make notebooks  re-pair notebooks/*.ipynb with their py:percent twins (jupytext --sync)"

venv: $(STAMP)

# torch first (the CPU wheel on this kind of machine, CUDA wheels elsewhere), then mmcv built against it,
# then everything else pinned, then this package (editable) and its Jupyter kernel.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel ninja $(call pin,setuptools)
	$(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(call pin,torch)
	$(PY) -c "import mmcv.ops" 2>/dev/null || $(MMCV_BUILD_ENV) MMCV_WITH_OPS=1 $(PIP) install --no-build-isolation $(call pin,mmcv)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-build-isolation --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (pneumothorax)"
	$(PY) -m pip check
	touch $@

demo: $(STAMP)
	$(PY) -m helpers demo

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/jupytext --sync notebooks/*.py

hooks: $(STAMP)
	$(VENV)/bin/pre-commit install

test-slurm: $(STAMP)
	PNEUMO_TEST_SLURM=1 $(PY) -m pytest tests/test_slurm.py -rs

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir $(OUTPUTS)/runs --port $(TB_PORT)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

sweep: $(STAMP)
	$(PY) -m helpers sweep

report: $(STAMP)
	$(PY) -m helpers pipeline

benchmark: $(STAMP)
	$(PY) benchmarks/prepare.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/evaluate.py

notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/*.py

clean-outputs:
	rm -rf outputs
