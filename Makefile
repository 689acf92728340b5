# The two set-up commands of the README: `make demo` and `make test`.
# Both install what they need first (Debian packages through apt, the project through pip).

PYTHON ?= python3
APT_PACKAGES = orthanc orthanc-dicomweb dcmtk libpixelmed-java default-jre-headless
PYTEST_ARGS ?=

.PHONY: setup demo test

setup:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(PYTHON) -m pip install -q --disable-pip-version-check -e '.[test]'

demo: setup
	vindr-convert demo

test: setup
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)
