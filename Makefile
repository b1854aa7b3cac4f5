# Segmentation Uncertainty: `make app` runs the product on the bundled sample data, `make test` runs the tests.
# Each sets itself up on a fresh Debian machine (root; only the package registries reachable).

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8080
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
# Headless rendering (EGL through Mesa) and the Colin27 / AAL sample data.
APP_DEBS := libegl1 libegl-mesa0 libgl1-mesa-dri libglx-mesa0 libosmesa6 mricron-data
# A real browser for the web tests (never `playwright install`: it downloads and fails offline).
TEST_DEBS := chromium fonts-liberation

.PHONY: app test bench setup setup-test clean

app: setup
	VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow $(VENV)/bin/segmentation-uncertainty-app --host $(HOST) --port $(PORT)

test: setup-test
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run_all.py

setup: $(STAMPS)/python $(STAMPS)/debs-app
setup-test: setup $(STAMPS)/debs-test

$(STAMPS)/debs-app: Makefile scripts/ensure-debian-packages
	scripts/ensure-debian-packages $(APP_DEBS)
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/debs-test: Makefile scripts/ensure-debian-packages
	scripts/ensure-debian-packages $(TEST_DEBS)
	@mkdir -p $(STAMPS) && touch $@

# torch is pinned here, not in pyproject.toml: 2.13.0 is the CPU build that installs from local disk;
# an unpinned torch would download a multi-GB CUDA build.
$(STAMPS)/python: pyproject.toml Makefile
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || scripts/ensure-debian-packages python3-venv
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[slicer,web,data,cli,test]"
	@mkdir -p $(STAMPS) && touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
