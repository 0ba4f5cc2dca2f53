# ecs-rerun — every command a newcomer needs. Tools are installed into .tools/ (git-ignored)
# from the package registries, so a fresh machine with only Rust and Python can run all of it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS  := $(CURDIR)/.tools
VENV   := $(TOOLS)/venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
export PATH := $(VENV)/bin:$(PATH)

.PHONY: help test lint unit replay replay-dry invoke build bench deploy tools clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# --- tools -------------------------------------------------------------------------------------
$(VENV)/.installed: scripts/requirements.txt
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r scripts/requirements.txt
	touch $@

tools: $(VENV)/.installed ## install the Python-side tools into .tools/venv

# --- the two commands of the README ------------------------------------------------------------
test: lint unit ## formatting, lint and every test (what CI runs)

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings

unit:
	cargo test --locked

replay-dry: ## replay events/ through the handler, dry run: no AWS call, prints the requests
	cargo run --quiet --locked --bin ecs-rerun-replay -- --dry-run --expect events/expected.json events/[0-9]*.json

replay: replay-dry ## replay the sample events end to end

clean: ## remove build output and local tools
	cargo clean
	rm -rf $(TOOLS)
