# mk/local.mk: project-local tools for the local AWS environment (moto, AWS CLI v1, cargo-lambda,
# zig, cfn-lint, pytest in .venv/; asl-validator and @cloud-copilot/iam-simulate in .tools/npm; the
# latter is AGPL-3.0: a test tool of this environment, never part of what stackdrop ships).
# Included by the main Makefile:
#
#     include mk/local.mk
#
# Needs only python3 (3.11+, with venv and pip) and node/npm on the machine. Every version is
# pinned in infra/local/requirements.txt and infra/local/npm/package-lock.json; a stamp file makes
# each half reinstall only when its pin file changes.
#
# Targets:   venv (Python tools), tools (venv + npm tools), local-up (run the local AWS
#            environment on :4566), test-local-env (pytest of infra/local).
# Variables: VENV, PY, AWS, CARGO_LAMBDA, CFN_LINT, ASL_VALIDATOR (absolute paths; use them in
#            recipes after a prerequisite on `venv` / `tools`), LOCAL_ENV (the environment script).

# Repository root = the folder holding mk/, whatever the caller's working directory.
LOCAL_MK_ROOT := $(patsubst %/,%,$(dir $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))))

PYTHON3       ?= python3
VENV          ?= $(LOCAL_MK_ROOT)/.venv
PY            := $(VENV)/bin/python
AWS           := $(VENV)/bin/aws
CARGO_LAMBDA  := $(VENV)/bin/cargo-lambda
CFN_LINT      := $(VENV)/bin/cfn-lint
NPM_PREFIX    ?= $(LOCAL_MK_ROOT)/.tools/npm
ASL_VALIDATOR := $(NPM_PREFIX)/node_modules/.bin/asl-validator
LOCAL_ENV     := $(LOCAL_MK_ROOT)/infra/local/stackdrop_local.py

LOCAL_REQUIREMENTS := $(LOCAL_MK_ROOT)/infra/local/requirements.txt
LOCAL_NPM_DIR      := $(LOCAL_MK_ROOT)/infra/local/npm
VENV_STAMP         := $(VENV)/.stamp-requirements
NPM_STAMP          := $(NPM_PREFIX)/.stamp-package-lock

.PHONY: venv tools local-up test-local-env

venv: $(VENV_STAMP)

tools: $(VENV_STAMP) $(NPM_STAMP)

# A venv whose python is gone (e.g. the interpreter was upgraded) is rebuilt from scratch.
$(VENV_STAMP): $(LOCAL_REQUIREMENTS)
	@if [ -d "$(VENV)" ] && ! "$(PY)" -c 'import sys' >/dev/null 2>&1; then \
	  echo "local.mk: $(VENV) is broken, recreating it"; rm -rf "$(VENV)"; fi
	@[ -x "$(PY)" ] || $(PYTHON3) -m venv "$(VENV)"
	"$(PY)" -m pip install --quiet --disable-pip-version-check -r "$(LOCAL_REQUIREMENTS)"
	@touch "$@"

$(NPM_STAMP): $(LOCAL_NPM_DIR)/package.json $(LOCAL_NPM_DIR)/package-lock.json
	@mkdir -p "$(NPM_PREFIX)"
	cp "$(LOCAL_NPM_DIR)/package.json" "$(LOCAL_NPM_DIR)/package-lock.json" "$(NPM_PREFIX)/"
	npm ci --prefix "$(NPM_PREFIX)" --no-audit --no-fund --loglevel=error
	@touch "$@"

# The local AWS environment in the foreground (Ctrl-C stops it). Pass options with
# LOCAL_ENV_ARGS, e.g. make local-up LOCAL_ENV_ARGS='--lambda-url http://127.0.0.1:9001'.
LOCAL_ENV_ARGS ?=
local-up: $(VENV_STAMP)
	"$(PY)" "$(LOCAL_ENV)" $(LOCAL_ENV_ARGS)

test-local-env: $(VENV_STAMP) $(NPM_STAMP) $(GUEST_TEST_DEPS)
	cd "$(LOCAL_MK_ROOT)" && "$(PY)" -m pytest -q infra/local
