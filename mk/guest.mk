# mk/guest.mk: the root filesystem of the local environment's real guests (Debian 13 booted with
# systemd-nspawn for every EC2 instance; see infra/local/README.md). Included by the main Makefile
# before mk/local.mk. Linux + root only (debootstrap, mounts).
#
# Targets:   rootfs      host packages (debootstrap, systemd-container) + .local/guest/rootfs
#            test-guests the guest tests (pytest infra/local/guests), root filesystem first
# Variables: GUEST_ROOTFS (the folder), DEBIAN_MIRROR (default: the host's own apt mirror, read
#            by infra/local/guests/mirror.py; no mirror address is written in the project),
#            GUEST_TEST_DEPS (rootfs when this is Linux and we are root, else empty).
#
# The stamp's name carries a hash of the recipe (the infra/local/guests/rootfs/ folder): the root
# filesystem is rebuilt only when its recipe changes, or when it is gone.

GUEST_MK_ROOT := $(patsubst %/,%,$(dir $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))))
GUEST_RECIPE  := $(GUEST_MK_ROOT)/infra/local/guests/rootfs
GUEST_ROOTFS  ?= $(GUEST_MK_ROOT)/.local/guest/rootfs
GUEST_HASH    := $(shell cd "$(GUEST_MK_ROOT)" && find infra/local/guests/rootfs -type f 2>/dev/null | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)
GUEST_STAMP   := $(GUEST_ROOTFS)/etc/stackdrop-rootfs-$(GUEST_HASH)
GUEST_TEST_DEPS := $(if $(filter Linux-0,$(shell uname -s)-$(shell id -u)),rootfs)

.PHONY: rootfs guest-host-packages test-guests

rootfs: $(GUEST_STAMP) ## the local guests' root filesystem (Debian 13, .local/guest/rootfs)

$(GUEST_STAMP):
	@$(MAKE) --no-print-directory -f "$(GUEST_MK_ROOT)/mk/guest.mk" guest-host-packages
	@mirror="$${DEBIAN_MIRROR:-$$(python3 "$(GUEST_MK_ROOT)/infra/local/guests/mirror.py")}" && \
	  start=$$(date +%s) && \
	  bash "$(GUEST_RECIPE)/build.sh" "$(GUEST_ROOTFS)" "$$mirror" && \
	  echo "make rootfs: built in $$(( $$(date +%s) - start ))s, $$(du -sh "$(GUEST_ROOTFS)" | cut -f1)"
	@touch "$@"

guest-host-packages:
	@if [ "$$(uname -s)" != Linux ] || [ "$$(id -u)" != 0 ]; then \
	  echo "make rootfs: needs Linux and root (debootstrap, mounts); without it, run the local" \
	       "environment without guests" >&2; exit 1; fi
	@if ! command -v debootstrap >/dev/null || ! command -v systemd-nspawn >/dev/null; then \
	  command -v apt-get >/dev/null || { echo "make rootfs: needs apt-get (a Debian host)" >&2; exit 1; }; \
	  echo "make rootfs: apt-get install debootstrap systemd-container"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    debootstrap systemd-container >/dev/null; fi

export STACKDROP_GUEST_ROOTFS := $(GUEST_ROOTFS)

test-guests: venv rootfs ## real guests against moto (pytest infra/local/guests)
	cd "$(GUEST_MK_ROOT)" && "$(PY)" -m pytest -q infra/local/guests
