# The two set-up commands of the README: `make demo` and `make test`.
# Both install what they need first: Debian packages through apt (only those missing), then
# this project into a virtual environment, .venv, made with Debian's own python3 (a stock
# Debian refuses `pip install` outside one, PEP 668). Every target runs from that venv.

# The interpreter the venv is made from: Debian's, whatever `python3` is first on PATH.
BASE_PYTHON ?= /usr/bin/python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Needed: Python and its venv module, the PACS, its DICOMweb, PostgreSQL and Python plugins
# (the last runs the front door's checks inside Orthanc), nginx (the front door), PostgreSQL
# (serve --index postgresql), dcmtk (a real DIMSE client for the tests), debootstrap (Debian
# 13's Orthanc on a Debian 12, see the orthanc target), iproute2 (`ip`, a test proves DICOM
# is not reachable beyond loopback) and libatomic1 (the browser test's playwright driver
# needs it; a minimal Debian 12 lacks it).
APT_PACKAGES = python3 python3-venv orthanc orthanc-dicomweb orthanc-postgresql orthanc-python \
	nginx postgresql dcmtk debootstrap iproute2 libatomic1
# Wanted: PixelMed's validators (with Debian's Xalan: Debian 13's PixelMed needs it), and Debian's chromium for the viewer's browser test
# (those tests are skipped when they cannot be installed); npm fetches the OHIF viewer
# (`vindr-convert view`), installed from Debian only when no npm is on PATH.
APT_OPTIONAL = libpixelmed-java libxalan2-java default-jre-headless chromium
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup apt venv orthanc demo test test-quick bench bench-quick clean-venv fresh-debian

setup: apt venv orthanc

# Orthanc >= 1.11 (ExtraMainDicomTags: every archive query answered from the index). Debian
# 13 ships 1.12.7; on Debian 12 (1.10.1) this builds a minimal Debian 13 root with
# Debian's own Orthanc packages once (debootstrap, about 1 minute, sudo when not root),
# which `serve` then runs by default. Nothing happens when the system's Orthanc is recent.
orthanc: venv
	@$(VENV)/bin/vindr-convert install-orthanc --if-needed || echo "warning: no Debian 13 \
	Orthanc (see above): serve runs the system's older Orthanc, which reads files for the \
	ImageLaterality, ViewPosition and PatientAge filters"

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
# a real Orthanc (started by the suite itself); then the DIMSE and DICOMweb tests again
# against a two-node cluster on a PostgreSQL index.
CLUSTER_TESTS = tests/integration/test_pacs_dicom.py tests/integration/test_pacs_dicomweb.py \
	tests/integration/test_qido_index.py tests/integration/test_pacs_verify.py
# The cluster half runs even when the first half failed; make fails if either did.
test: setup
	@status=0; \
	$(PY) -m pytest -q -rfEs $(PYTEST_ARGS) || status=1; \
	echo "VINDR_TEST_PACS=cluster $(PY) -m pytest -q -rfEs $(CLUSTER_TESTS) $(PYTEST_ARGS)"; \
	VINDR_TEST_PACS=cluster $(PY) -m pytest -q -rfEs $(CLUSTER_TESTS) $(PYTEST_ARGS) || status=1; \
	exit $$status

# The developer's loop: unit tests only (no whole-release conversion, no server), < 60 s.
test-quick: venv
	$(PY) -m pytest -q -m "not slow and not integration" $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/convert_throughput.py --studies 50 200 --scale 1
	$(PY) benchmarks/archive_queries.py --studies 5000 --repeat 5

# Under 10 minutes on 2 cores: 1,000 exams.
bench-quick: setup
	$(PY) benchmarks/archive_queries.py --quick

# What CI runs: `make demo` then `make test` on a clean clone of HEAD in fresh minimal
# Debian 12 and 13 roots (debootstrap; as root or with sudo; about 20 minutes a suite).
# FRESH_SUITES=trixie for one.
FRESH_SUITES ?= bookworm trixie
fresh-debian:
	@SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; $$SUDO .ci/fresh-debian $(FRESH_SUITES)

clean-venv:
	rm -rf $(VENV)
