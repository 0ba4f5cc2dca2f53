# ecs-rerun — every command a newcomer needs. Tools are installed into .tools/ (git-ignored)
# from the package registries, so a fresh machine with only Rust and Python can run all of it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS  := $(CURDIR)/.tools
VENV   := $(TOOLS)/venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
export PATH := $(VENV)/bin:$(PATH)

.PHONY: help test lint unit replay replay-dry invoke build bench deploy package smoke sam-build tools clean template-check docs-check e2e stack

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# --- tools -------------------------------------------------------------------------------------
$(VENV)/.installed: scripts/requirements.txt
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r scripts/requirements.txt
	touch $@

tools: $(VENV)/.installed ## install the Python-side tools into .tools/venv

# --- the two commands of the README ------------------------------------------------------------
test: lint unit template-check docs-check e2e ## formatting, lint and every test (what CI runs)

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings

unit:
	cargo test --locked

template-check: $(VENV)/.installed ## cfn-lint (+ serverless rules) template.yaml, rule pattern vs events/, IAM vs src/
	$(PY) -m pytest -q tests/template --ignore=tests/template/test_docs.py

docs-check: $(VENV)/.installed ## the docs say what the code does: links, make targets, parameters, env vars, outcomes, metrics
	$(PY) -m pytest -q tests/template/test_docs.py

# --- deploy: the SAM CLI, cargo-lambda, zig and boto3 (PyPI) in their own venv, .tools/deploy -----------------
# SAM's `rust-cargolambda` build runs `cargo lambda build --release --arm64`; cargo-lambda finds zig (the pip
# package ziglang) through the `python3` on PATH, so this venv's bin comes first on PATH for every sam command.
# The SAM CLI is installed there only when no `sam` is on PATH (yours is used otherwise). Telemetry off.
DEPLOY_VENV := $(TOOLS)/deploy
SAM_ENV     := PATH="$(DEPLOY_VENV)/bin:$$PATH" SAM_CLI_TELEMETRY=0
SMOKE_ARGS   = $(if $(STACK),--stack $(STACK)) $(if $(CLUSTER),--cluster $(CLUSTER)) \
               $(if $(FAMILY),--family $(FAMILY)) $(if $(REGION),--region $(REGION))

$(DEPLOY_VENV)/.installed: scripts/deploy-requirements.txt
	python3 -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/pip install --quiet -r scripts/deploy-requirements.txt
	@if [ -x $(DEPLOY_VENV)/bin/sam ] || ! command -v sam >/dev/null 2>&1; then \
		echo "$(DEPLOY_VENV)/bin/pip install aws-sam-cli"; \
		$(DEPLOY_VENV)/bin/pip install --quiet 'aws-sam-cli>=1.170,<2'; \
	else \
		echo "using the SAM CLI on PATH: $$(command -v sam) ($$(sam --version))"; \
	fi
	touch $@

samconfig.toml:
	@echo "samconfig.toml is missing: copy samconfig.toml.example to samconfig.toml and fill in the values marked" >&2
	@echo "FILL IN (Region, PassRoleArns, TaskFamilies, Clusters), or run 'sam deploy --guided' once; then 'make deploy'." >&2
	@exit 1

sam-build: $(DEPLOY_VENV)/.installed
	rustup target add aarch64-unknown-linux-gnu
	$(SAM_ENV) sam build --beta-features

deploy: samconfig.toml ## build for arm64 and deploy the stack with samconfig.toml (sam build --beta-features && sam deploy)
	$(MAKE) --no-print-directory sam-build
	$(SAM_ENV) sam deploy
	@echo "deployed: now 'make smoke' checks it end to end (one failed RunTask that can never start a task)"

package: sam-build ## sam build --beta-features, then the zipped size of the function as sam deploy uploads it
	$(DEPLOY_VENV)/bin/python scripts/package_size.py --build-dir .aws-sam/build --function EcsRerunFunction

smoke: $(DEPLOY_VENV)/.installed ## after deploy: one failed RunTask that never starts a task; prints the outcome (STACK= CLUSTER= FAMILY= REGION=)
	$(DEPLOY_VENV)/bin/python scripts/smoke.py $(SMOKE_ARGS)

replay-dry: ## replay events/ through the handler, dry run: no AWS call, prints the requests
	cargo run --quiet --locked --bin ecs-rerun-replay -- --dry-run --fresh --expect events/expected.json events/[0-9]*.json

# --- end to end: the real bootstrap under `cargo lambda watch`, the AWS SDK talking to moto's server ----
# through a scripted fault proxy (scripts/e2e/). Everything binds 127.0.0.1 on free ports and is stopped
# again at the end, also on Ctrl-C. For the local run the function's backoff is shortened to
# ECS_RERUN_BASE_DELAY_MS=200 / ECS_RERUN_MAX_DELAY_MS=1000 (production: unset, each failure class on its own schedule), so it takes seconds.
E2E_BUILD := cargo build --quiet --locked --bin ecs-rerun

replay: $(VENV)/.installed ## replay events/ end to end: emulator + local AWS endpoint; table, notifications, tasks
	$(E2E_BUILD)
	$(PY) scripts/e2e/replay.py --fresh --expect events/expected.json events/[0-9]*.json

e2e: $(VENV)/.installed ## end-to-end tests (tests/e2e): each event's RunTask calls, tasks, notification; faults
	$(E2E_BUILD)
	$(PY) -m pytest -q tests/e2e

stack: $(VENV)/.installed ## start the local stack (emulator + endpoint) and keep it up until Ctrl-C
	$(E2E_BUILD)
	$(PY) scripts/e2e/stack.py up

invoke: $(VENV)/.installed ## send one event to the running `make stack`: make invoke EVENT=events/01-agent-ec2.json
	@test -n "$(EVENT)" || { echo "usage: make invoke EVENT=events/01-agent-ec2.json (with \`make stack\` running)"; exit 2; }
	$(PY) scripts/e2e/replay.py --running --json --fresh --expect events/expected.json $(EVENT)

# --- build and bench: cargo-lambda + zig (PyPI) and the bench's Python side in their own venv, .tools/bench ----
BENCH_VENV := $(TOOLS)/bench
BENCH_PY   := $(BENCH_VENV)/bin/python

$(BENCH_VENV)/.installed: bench/requirements.txt
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -r bench/requirements.txt
	touch $@

build: $(BENCH_VENV)/.installed ## arm64 release build for Lambda, zipped: target/lambda/ecs-rerun/bootstrap.zip
	rustup target add aarch64-unknown-linux-gnu
	PATH="$(BENCH_VENV)/bin:$$PATH" cargo lambda build --release --arm64 --locked --bin ecs-rerun --output-format zip
	@ls -l target/lambda/ecs-rerun/bootstrap.zip

bench: build $(BENCH_VENV)/.installed ## benchmarks (core, cold start vs Python, size, burst, guarded records, mass outage): one table, bench/results.md
	$(BENCH_PY) bench/run.py $(BENCH_ARGS)

clean: ## remove build output and local tools
	cargo clean
	rm -rf $(TOOLS) .aws-sam
