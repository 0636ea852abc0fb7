# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test lint venv test-deps browser bench conformance clean

# Installs are constrained to binder/requirements.txt's pins: the suite runs what the Binder demo runs, and a
# release on the package index (a newer jupyterlab) changes neither until the pins do.
PINS := -c binder/requirements.txt

$(VENV)/.installed: pyproject.toml binder/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e . $(PINS)
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml binder/requirements.txt
	$(PY) -m pip install -q -e '.[test]' $(PINS)
	touch $@

venv: $(VENV)/.installed

## make demo: install, inspect the bundled demo model, print it, write demo_output/demo.html
demo: $(VENV)/.installed
	$(PY) -m inspector.demo --html demo_output/demo.html

## Debian's Chromium for the browser tests (playwright cannot download browsers here)
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation; \
	fi

## make lint: ruff (its rules are in pyproject.toml) and mypy on the package
lint: $(VENV)/.test-installed
	$(PY) -m ruff check inspector tests bench conformance
	$(PY) -m mypy inspector

## make test: install test deps and the browser, lint, run the whole suite (exit 5, nothing collected, fails)
test: $(VENV)/.test-installed lint browser
	INSPECTOR_REQUIRE_BROWSER=1 $(PY) -m pytest tests --nbmake notebooks $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc = 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

$(VENV)/.conformance-installed: $(VENV)/.installed pyproject.toml binder/requirements.txt
	$(PY) -m pip install -q -e '.[conformance]' $(PINS)
	touch $@

## make conformance: flax's own tests/linen and tests/nnx/bridge (from the sdist of the installed flax),
## run alone, routed to inspector, routed through inspect_* and under a plain-jit control
## (CONFORMANCE_ARGS="--ways flax,inspector,jit" or "--suites tests/linen/linen_module_test.py" to run less)
CONFORMANCE_JOBS ?= 2
CONFORMANCE_ARGS ?=
conformance: $(VENV)/.conformance-installed
	$(PY) -m conformance.run -n $(CONFORMANCE_JOBS) $(CONFORMANCE_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
