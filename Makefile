# The two commands a new user runs (make test, make demo) set themselves up:
# they create .venv and install the package with what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench proto lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# On every CPU (pytest-xdist), one test handed out at a time, the long property tests first
# (tests/conftest.py says why). `$(PY) -m pytest` alone runs the same suite in one process.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist load --maxschedchunk 1

# Replay the bundled scenario (calico_vpp_driver/scenario/demo.yaml): probe table, then Felix messages.
demo: $(STAMP)
	$(PY) -m calico_vpp_driver demo

bench: $(STAMP)
	$(PY) benchmarks/run.py

# Regenerate the checked-in protobuf code from proto/ (a test checks it is current).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=calico_vpp_driver/felix \
		--pyi_out=calico_vpp_driver/felix proto/felixbackend.proto
	$(PY) -m grpc_tools.protoc -Iproto --python_out=calico_vpp_driver/cni \
		--pyi_out=calico_vpp_driver/cni proto/cnibackend.proto

lint: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ruff check calico_vpp_driver tests benchmarks
	$(PY) -m mypy calico_vpp_driver

clean:
	rm -rf $(VENV) build *.egg-info
