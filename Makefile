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

$(VENV)/.installed: requirements.txt setup.py tfface/data/tfrecord/_framer.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	# torch is optional (.pth import, the arcface_torch baselines of the benchmarks):
	# the tests that need it run whenever it is importable (BUILD.md: a CPU torch).
	touch $@

# mxnet 1.9.1 needs numpy<1.24: the reference implementation lives in its own venv.
$(MXVENV)/.installed: requirements-mxnet.txt
	test -x $(MXVENV)/bin/python || $(PYTHON) -m venv $(MXVENV)
	$(MXVENV)/bin/python -m pip install -q --upgrade pip
	$(MXVENV)/bin/python -m pip install -q -r requirements-mxnet.txt
	touch $@

test: $(VENV)/.test-installed $(MXVENV)/.installed
	TFFACE_MXNET_PYTHON=$(abspath $(MXVENV))/bin/python $(PY) -m pytest

# The main job on the embedded synthetic dataset: generate, transcode, train (with
# Accuracy-Flip before and after training), export for TF Serving, verify the export,
# compare a same-identity pair and a different-identity pair with it, then a summary.
demo: $(VENV)/.installed
	rm -rf $(DEMO) && mkdir -p $(DEMO) && date +%s.%N > $(DEMO)/.started
	$(PY) tools/make_synthetic.py --output_dir=$(DEMO)/rec
	$(PY) tools/rec2tfrecord.py --rec_dir=$(DEMO)/rec --output_dir=$(DEMO)/tfrecords
	$(PY) tools/inspect_data.py $(DEMO)/tfrecords
	$(PY) tools/train.py --dataset=synthetic --data_dir=$(DEMO)/tfrecords \
	  --val_bins=$(DEMO)/rec/synth_val.bin --workdir=$(DEMO)/train
	$(PY) tools/export.py --model=$(DEMO)/train --export_dir=$(DEMO)/serving/face --version=1
	$(PY) tools/verify.py --model=$(DEMO)/serving/face --bins=$(DEMO)/rec/synth_val.bin \
	  --output_json=$(DEMO)/verify_export.json --roc_dir=$(DEMO)/roc
	$(PY) tools/compare.py --model=$(DEMO)/serving/face --bin=$(DEMO)/rec/synth_val.bin --pair=0
	$(PY) tools/compare.py --model=$(DEMO)/serving/face --bin=$(DEMO)/rec/synth_val.bin --pair=-1
	$(PY) tools/demo_summary.py --demo_dir=$(DEMO)

# The benchmarks of docs/performance.md (every figure against a baseline of the same run).
bench: $(VENV)/.installed
	$(PY) benchmarks/transcode.py --work_dir=bench_run/transcode
	$(PY) benchmarks/tool_startup.py
	$(PY) benchmarks/input_pipeline.py --data_dir=bench_run/transcode/tfrecords
	$(PY) benchmarks/train_step.py --networks=r18,r50,mbf --batch_sizes=16,32 --xla=false
	$(PY) benchmarks/profile_steps.py --data_dir=bench_run/transcode/tfrecords --nojit
	$(PY) benchmarks/partial_fc.py --num_classes=100000 --replicas=2
	$(PY) benchmarks/ijb_scoring.py

clean:
	rm -rf $(DEMO) bench_run
