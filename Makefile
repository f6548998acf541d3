# Front door of affectseq. Every target creates .venv (and installs the project) first if missing.
# Make variables map one-to-one onto CLI options; empty means "the CLI's default".
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

MANIFEST ?= data_manifest.yaml
DATASET ?=
BACKBONE ?= inception
WEIGHTS ?=
DEVICE ?=
LIMIT ?=

opt = $(if $(strip $(2)),$(1) $(2))
EMBED_OPTS = --manifest $(MANIFEST) $(call opt,--dataset,$(DATASET)) --backbone $(BACKBONE) \
	$(call opt,--weights,$(WEIGHTS)) $(call opt,--device,$(DEVICE)) $(call opt,--limit,$(LIMIT))

.PHONY: setup demo embed info ls sample test lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job on the built-in sample: generates it on first use, embeds it with explicitly
# requested random weights (no downloads possible here), prints where the cache is.
demo: $(STAMP)
	$(PY) -m embed run --manifest $(MANIFEST) --dataset sample --backbone inception --weights random
	$(PY) -m embed info --manifest $(MANIFEST) --dataset sample --backbone inception --weights random

embed: $(STAMP)
	$(PY) -m embed run $(EMBED_OPTS)

info: $(STAMP)
	$(PY) -m embed info $(EMBED_OPTS)

ls: $(STAMP)
	$(PY) -m embed ls --manifest $(MANIFEST)

sample: $(STAMP)
	$(PY) -m embed sample --manifest $(MANIFEST)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check embed sequence tests bench

bench: $(STAMP)
	$(PY) bench/embed_bench.py

clean-venv:
	rm -rf $(VENV)
