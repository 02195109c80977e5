# lineinspect: `make run` and `make test` do all set-up on a fresh Debian machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages the test suite talks to (real peers, not mocks). Installed when run as root.
# gir1.2-aravis-0.8: Aravis cameras; libgirepository1.0-dev libcairo2-dev pkg-config: building PyGObject;
# chromium: renders the dashboard headless in its test.
# build-essential cmake openssl lib{ssl,mbedtls,xml2,sqlite3,protobuf-c}-dev: building EMQX Neuron (`make neuron`).
SYSTEM_PACKAGES := mosquitto mosquitto-clients gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev pkg-config chromium \
	build-essential cmake openssl libssl-dev libmbedtls-dev libxml2-dev libsqlite3-dev libprotobuf-c-dev
STATION_DIR ?= .
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test neuron kserve bench bench-tile lint typecheck system-deps samples default-model default-model-baseline clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The service alone (make run): runtime dependencies only, no system packages needed.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

# Everything the tests and tools need (torch, CPU build, for the teach tests). System packages first:
# PyGObject compiles against libgirepository.
$(VENV)/.installed: pyproject.toml | $(BIN)/python system-deps
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,train]'
	touch $@ $(VENV)/.installed-run

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

run: $(VENV)/.installed-run
	$(BIN)/lineinspect run --station-dir $(STATION_DIR) --host $(HOST) --port $(PORT)

test: $(VENV)/.installed system-deps neuron kserve
	LINEINSPECT_NEURON_CACHE=$(NEURON_CACHE) $(BIN)/python -m pytest -q

# A real EMQX Neuron gateway for tests/integration/test_reject_neuron_real.py, built from the vendored sources
# (../shared/vendor/neuron, ~30 s) into NEURON_CACHE, outside the checkout; skipped when the binary is there.
# A failed build does not stop `make test`: it prints the error, and those tests skip naming the log.
NEURON_VENDOR ?= ../shared/vendor/neuron
NEURON_CACHE ?= $(HOME)/.cache/lineinspect/neuron
neuron: | system-deps
	@if [ ! -f $(NEURON_VENDOR)/build.sh ]; then \
	  echo "neuron: $(NEURON_VENDOR) is absent: the real-Neuron tests will skip"; \
	elif [ -x $(NEURON_CACHE)/build/neuron ]; then \
	  echo "neuron: using $(NEURON_CACHE)/build/neuron"; \
	else \
	  mkdir -p $(NEURON_CACHE); \
	  echo "neuron: building EMQX Neuron into $(NEURON_CACHE) (log: $(NEURON_CACHE)/build.log)"; \
	  if ! bash $(NEURON_VENDOR)/build.sh $(NEURON_CACHE) >$(NEURON_CACHE)/build.log 2>&1; then \
	    tail -n 25 $(NEURON_CACHE)/build.log; \
	    echo "neuron: BUILD FAILED (log: $(NEURON_CACHE)/build.log); the real-Neuron tests will skip"; \
	  fi; \
	fi

# MLServer, the real KServe v2 server of the remote-inference tests and bench (tests/helpers/kserve_server.py),
# in its own virtualenv: mlserver 1.7 pins fastapi < 0.116, older than the one the station's HTTP API runs on.
# The kserve package's own model server, the peer of the binary data extension (MLServer answers JSON only),
# in a third: it needs starlette >= 1.3, which mlserver's fastapi pin excludes.
KSERVE_VENV ?= .venv-kserve
KSERVE_BINARY_VENV ?= .venv-kserve-binary
kserve: $(KSERVE_VENV)/.installed $(KSERVE_BINARY_VENV)/.installed
$(KSERVE_VENV)/.installed:
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install -q 'mlserver==1.7.1' 'onnxruntime>=1.18'
	touch $@
$(KSERVE_BINARY_VENV)/.installed:
	$(PYTHON) -m venv $(KSERVE_BINARY_VENV)
	$(KSERVE_BINARY_VENV)/bin/python -m pip install -q 'kserve==0.21.0' 'onnxruntime>=1.18'
	touch $@

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

# Each benchmark prints ratios measured side by side in one run (absolute times drift on shared machines).
bench: $(VENV)/.installed kserve
	$(BIN)/python bench/bench_inspection.py
	$(BIN)/python bench/bench_layout.py
	$(BIN)/python bench/bench_station.py
	$(BIN)/python bench/bench_reject.py
	$(BIN)/python bench/bench_calibration.py
	$(BIN)/python bench/bench_archive.py
	$(BIN)/python bench/bench_plc_trigger.py
	$(BIN)/python bench/bench_quantize.py
	$(BIN)/python bench/bench_neuron.py
	$(BIN)/python bench/bench_remote.py
	$(BIN)/python bench/chaos.py

# Teach and evaluate on the real magnetic-tile set (shared/, research use; see bench/magnetic_tile.py).
# Every method on the magnetic tiles, then featnet's few-labels curve (3 seeds, two runs at once): hours on 2 cores.
bench-tile: $(VENV)/.installed
	$(BIN)/python bench/magnetic_tile.py --jobs 2

# Sample parts with ground truth (committed in sample_images/) and the default model, taught
# from 200 generated good parts (another seed, not committed) by the project's own `teach`.
samples: $(VENV)/.installed
	rm -rf sample_images/good sample_images/defective sample_images/masks
	$(BIN)/lineinspect samples --out sample_images --good 10 --defective 10 --seed 0

default-model: $(VENV)/.installed
	rm -rf build/teach-good
	$(BIN)/lineinspect samples --out build/teach-good --good 200 --defective 0 --seed 1000
	$(BIN)/lineinspect teach --method stats --good build/teach-good/good --out models/default --name default

# The frame plausibility baseline (brightness, contrast, focus, noise) of the committed default model,
# measured again from the same 200 generated good parts; the model, its sha256 and thresholds stay.
default-model-baseline: $(VENV)/.installed
	rm -rf build/teach-good
	$(BIN)/lineinspect samples --out build/teach-good --good 200 --defective 0 --seed 1000
	$(BIN)/python -m lineinspect.offline.frame_baseline --model models/default --good build/teach-good/good

clean:
	rm -rf $(VENV) $(KSERVE_VENV) $(KSERVE_BINARY_VENV) .pytest_cache .mypy_cache .ruff_cache
