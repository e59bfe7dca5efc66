# `make demo` and `make test` work on a fresh machine: each creates the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench quality clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)  ## fully-automatic stage, embedded tiny model, bundled sample images -> out/demo
	$(VENV)/bin/data-engine output.dir=out/demo

test: $(STAMP)  ## the whole test suite (CPU only)
	$(VENV)/bin/pytest

bench: $(STAMP)  ## this generator vs segment_anything's SamAutomaticMaskGenerator, same model and images
	$(VENV)/bin/python benchmarks/amg_vs_reference.py

quality: $(STAMP)  ## quality figures of the embedded tiny model on fresh synthetic scenes
	$(VENV)/bin/python benchmarks/quality.py

clean:
	rm -rf out
