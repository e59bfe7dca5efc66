# `make demo` and `make test` work on a fresh machine: each creates the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo audit engine test lint bench quality clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --no-cache-dir -q -c constraints.txt wheel
	# sam2 is an sdist: built in this environment (an isolated build would fetch torch again) without its CUDA extension
	SAM2_BUILD_CUDA=0 $(VENV)/bin/pip install --disable-pip-version-check --no-cache-dir -q --no-build-isolation \
		-c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)  ## fully-automatic stage, embedded tiny model (amg=tiny thresholds), bundled sample images -> out/auto
	$(VENV)/bin/data-engine amg=tiny

audit: $(STAMP)  ## audit of the demo output against the sample scenes' exact masks -> out/audit
	$(VENV)/bin/data-engine stage=audit audit.pred=out/auto audit.expert=data_engine/samples/instances.json

engine: $(STAMP)  ## the data engine as one loop (engine=demo: synthetic scenes, embedded tiny model, CPU) -> out/engine
	$(VENV)/bin/data-engine stage=engine engine=demo runtime=serial

test: $(STAMP)  ## the whole test suite (CPU only)
	$(VENV)/bin/pytest

bench: $(STAMP)  ## this generator vs segment_anything's SamAutomaticMaskGenerator, same model and images
	$(VENV)/bin/python benchmarks/amg_vs_reference.py

quality: $(STAMP)  ## quality figures of the embedded tiny model on fresh synthetic scenes
	$(VENV)/bin/python benchmarks/quality.py

clean:
	rm -rf out

lint: $(STAMP)  ## ruff: formatting and lint rules (pyproject.toml)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
