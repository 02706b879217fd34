# SafeHarbor: `make run` serves the stack on the embedded default; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PACKAGES := libs/safeharbor-protocol libs/safeharbor-common gateway auth-service keydir-service audit-service \
            push-config-service tools/stream-emulator tools/devstack clients/python
PRESENT  := $(foreach p,$(PACKAGES),$(if $(wildcard $(p)/pyproject.toml),$(p)))
# setuptools too: the build backend every package names, at the version constraints.txt pins, in the venv
# as well, so tests/test_packaging.py builds offline with what `make install` builds with.
DEV_TOOLS := pytest hypothesis ruff mypy pyyaml pyotp kubernetes-validate docker jsonschema setuptools
# setuptools says "Editable installation ... be careful with folders ... with the same name as your package"
# for every package not in a src/ layout; that notice (InformationOnly, not a deprecation) is all the filter
# hides. Every other warning, pip's or the backend's, still shows, and tests/test_packaging.py fails on them.
QUIET_NOTICE := PYTHONWARNINGS='ignore:Editable installation'

.PHONY: install run test unit integration lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: constraints.txt Makefile $(foreach p,$(PRESENT),$(p)/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(QUIET_NOTICE) $(BIN)/python -m pip install -q -c constraints.txt --build-constraint constraints.txt \
	  $(foreach p,$(PRESENT),-e $(p)) $(DEV_TOOLS)
	touch $@

run: install
	-bash scripts/setup-frontend.sh && npm run build --silent -w web  # the web app; the stack runs without it
	SAFEHARBOR_WEB=1 $(BIN)/python -m safeharbor_devstack

test: install
	bash scripts/test-all.sh

unit: install
	bash scripts/test-all.sh unit

integration: install
	bash scripts/test-all.sh integration

# mypy per package, strict; the shared libraries are analysed from source (editable installs hide it).
lint: install
	$(BIN)/ruff check $(PRESENT) tests scripts
	for pkg in $$(ls -d $(foreach p,$(PRESENT),$(p)/*/__init__.py) | xargs -n1 dirname); do \
	  MYPYPATH=libs/safeharbor-protocol:libs/safeharbor-common $(BIN)/mypy --strict --ignore-missing-imports $$pkg || exit 1; done

clean:
	rm -rf var .pytest_cache

bench: install
	bash bench/run_all.sh
