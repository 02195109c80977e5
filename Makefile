# lineinspect: `make run` and `make test` do all set-up on a fresh Debian machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages the test suite talks to (real peers, not mocks). Installed when run as root.
# gir1.2-aravis-0.8: Aravis cameras; libgirepository1.0-dev libcairo2-dev pkg-config: building PyGObject.
SYSTEM_PACKAGES := mosquitto mosquitto-clients gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev pkg-config
STATION_DIR ?= .
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test bench lint typecheck system-deps samples default-model clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# System packages first: PyGObject (dev extra) compiles against libgirepository.
$(VENV)/.installed: pyproject.toml | $(BIN)/python system-deps
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing (run 'make test' as root, or install them); tests that need them will say so"; \
	  fi; \
	fi

run: $(VENV)/.installed
	$(BIN)/lineinspect serve --station-dir $(STATION_DIR) --host $(HOST) --port $(PORT)

test: $(VENV)/.installed system-deps
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_inspection.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
