# The two set-up commands of the README: `make demo` and `make test`.
# Both install what they need first (Debian packages through apt, the project through pip).

PYTHON ?= python3
# Needed: the PACS, its DICOMweb plugin, dcmtk (a real DIMSE client for the tests).
APT_PACKAGES = orthanc orthanc-dicomweb dcmtk
# Wanted: PixelMed's SR validator (its test is skipped when they cannot be installed).
APT_OPTIONAL = libpixelmed-java default-jre-headless
PYTEST_ARGS ?=

.PHONY: setup demo test

setup:
	@set -e; SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	missing(){ for p in "$$@"; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; }; \
	need="$$(missing $(APT_PACKAGES))"; want="$$(missing $(APT_OPTIONAL))"; \
	if [ -n "$$need$$want" ]; then $$SUDO apt-get update -qq; fi; \
	if [ -n "$$need" ]; then \
	  echo "installing Debian packages:" $$need; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$need; \
	fi; \
	if [ -n "$$want" ]; then \
	  echo "installing optional Debian packages:" $$want; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$want \
	    || echo "warning: could not install" $$want "- the PixelMed SR test will be skipped"; \
	fi
	$(PYTHON) -m pip install -q --disable-pip-version-check -e '.[test]'

demo: setup
	$(PYTHON) -m converter demo

test: setup
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)
