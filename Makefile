# tfface: `make demo` runs the main job on the synthetic dataset, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MXVENV := .venv-mxnet
DEMO := demo_run
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

# mxnet 1.9.1 needs numpy<1.24: the reference implementation lives in its own venv.
$(MXVENV)/.installed: requirements-mxnet.txt
	test -x $(MXVENV)/bin/python || $(PYTHON) -m venv $(MXVENV)
	$(MXVENV)/bin/python -m pip install -q --upgrade pip
	$(MXVENV)/bin/python -m pip install -q -r requirements-mxnet.txt
	touch $@

test: $(VENV)/.test-installed $(MXVENV)/.installed
	TFFACE_MXNET_PYTHON=$(abspath $(MXVENV))/bin/python $(PY) -m pytest

demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(PY) tools/make_synthetic.py --output_dir=$(DEMO)/rec
	$(PY) tools/rec2tfrecord.py --rec_dir=$(DEMO)/rec --output_dir=$(DEMO)/tfrecords
	$(PY) tools/inspect_data.py $(DEMO)/tfrecords

bench: $(VENV)/.installed
	$(PY) benchmarks/transcode.py --work_dir=bench_run/transcode

clean:
	rm -rf $(DEMO) bench_run
