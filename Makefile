# stackdrop: every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

# The local AWS environment and the project-local tools (.venv, .tools/npm).
-include mk/local.mk

.PHONY: help build test test-rust test-local schema bench fuzz lint fmt clean

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## build every crate (debug)
	$(CARGO) build --workspace --locked

test: test-rust ## run every test
	@echo "make test: all passed"

test-rust: ## unit, property and CLI tests of the Rust workspace
	$(CARGO) test --workspace --locked

schema: ## regenerate schema/*.schema.json from the config types
	$(CARGO) run --quiet --locked --bin stackdrop -- schema stack > schema/stack.schema.json
	$(CARGO) run --quiet --locked --bin stackdrop -- schema app > schema/app.schema.json

bench: ## measure `stackdrop validate` on a 1 MiB and a 2 GiB bundle (figures in BENCHMARKS.md)
	$(CARGO) build --release --locked --bin stackdrop
	python3 bench/validate_bench.py --bin target/release/stackdrop --out bench/out

FUZZ_SECONDS ?= 600
fuzz: ## fuzz the bundle reader and config parser (nightly + cargo-fuzz; not part of make test)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	mkdir -p fuzz/corpus/bundle && cd fuzz && $(CARGO) +nightly fuzz run bundle corpus/bundle seeds -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1

lint: ## clippy and rustfmt check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) fmt --all --check

fmt: ## format the code
	$(CARGO) fmt --all

clean: ## remove build outputs and local tools
	rm -rf target fuzz/target bench/out .venv .tools
