# The two set-up commands of the README: `make demo` and `make test`.
# Both install what they need first: Debian packages through apt (only those missing), then
# this project into a virtual environment, .venv, made with Debian's own python3 (a stock
# Debian refuses `pip install` outside one, PEP 668). Every target runs from that venv.

# The interpreter the venv is made from: Debian's, whatever `python3` is first on PATH.
BASE_PYTHON ?= /usr/bin/python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Needed: Python and its venv module, the PACS, its DICOMweb plugin, dcmtk (a real DIMSE
# client for the tests).
APT_PACKAGES = python3 python3-venv orthanc orthanc-dicomweb dcmtk
# Wanted: PixelMed's SR validator, and Debian's chromium for the viewer's browser test
# (those tests are skipped when they cannot be installed); npm fetches the OHIF viewer
# (`vindr-convert view`), installed from Debian only when no npm is on PATH.
APT_OPTIONAL = libpixelmed-java default-jre-headless chromium
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup apt venv demo test test-quick bench clean-venv

setup: apt venv

apt:
	@set -e; SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	missing(){ for p in "$$@"; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; }; \
	need="$$(missing $(APT_PACKAGES))"; want="$$(missing $(APT_OPTIONAL))"; \
	command -v npm >/dev/null 2>&1 || want="$$want npm"; \
	if [ -n "$$need$$want" ]; then $$SUDO apt-get update -qq; fi; \
	if [ -n "$$need" ]; then \
	  echo "installing Debian packages:" $$need; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$need; \
	fi; \
	if [ -n "$$want" ]; then \
	  echo "installing optional Debian packages:" $$want; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$want \
	    || echo "warning: could not install" $$want "- the tests that need them will be skipped"; \
	fi

venv: $(VENV)/.installed

# Re-installs only when pyproject.toml changed (or the venv is missing or broken).
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) && $(PY) -c 'import sys' 2>/dev/null || { \
	  echo "creating $(VENV) with $(BASE_PYTHON)"; rm -rf $(VENV); $(BASE_PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@
	@echo "installed: activate with '. $(VENV)/bin/activate' to call vindr-convert directly"

demo: setup
	$(VENV)/bin/vindr-convert demo $(DEMO_ARGS)

# Everything: unit tests, the slow end-to-end conversions and the integration tests against
# a real Orthanc (started by the suite itself).
test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The developer's loop: unit tests only (no whole-release conversion, no server), < 60 s.
test-quick: venv
	$(PY) -m pytest -q -m "not slow and not integration" $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/convert_throughput.py

clean-venv:
	rm -rf $(VENV)
