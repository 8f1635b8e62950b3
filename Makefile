# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create (or reuse) .venv, install pinned dependencies, the embedded model and data, build
# the Cython extension, then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.workbench-installed
EXT_SRC := $(wildcard workbench_ext/*.pyx workbench_ext/*.pxi workbench_ext/*.h workbench_ext/*.pxd) setup.py

.PHONY: setup build demo demo-quick test bench lab clean
setup: $(STAMP) build

$(STAMP): requirements/base.txt requirements/lock.txt requirements/embedded.txt requirements/sdists.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23"
	# The local CPU wheel first, alone: nothing later may replace it with a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements/base.txt -c requirements/lock.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/embedded.txt
	$(BIN)/pip download -q --no-deps --no-binary :all: --require-hashes -r requirements/sdists.txt -d .cache/embedded
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 'a CUDA torch was installed')"
	touch $@

build: $(STAMP) $(VENV)/.workbench-built
$(VENV)/.workbench-built: $(EXT_SRC)
	$(BIN)/python setup.py -q build_ext --inplace
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: setup
	$(BIN)/workbench run recipes/demo.yaml
	# the demo's own compressed student (the pruned stage) on the engines people deploy -- ONNX
	# Runtime int8 in its strongest configuration, torch int8 -- beside our runtime, the engines
	# taking turns in one run: results/demo/engines/ (README.md there has the same-run ratios)
	$(BIN)/workbench bench --models demo-pruned=results/demo/artifacts/pruned/model \
	  --engines torch-fp32,torch-int8-x86,ort-int8,wb-int8 --threads 2 --batch 1,8 --no-gemm \
	  --out results/demo/engines

demo-quick: setup
	$(BIN)/workbench run recipes/demo.yaml --quick

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/workbench bench

lab: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf build workbench_ext/*.c workbench_ext/*.so $(VENV)/.workbench-built
