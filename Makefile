# portcullis — the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PREFIX ?= /usr/local

# Debian packages the tests need: real Barbican, Keystone, PyKMIP and the reference clients;
# a kernel, qemu and busybox for the dm-crypt VM; cryptsetup and friends; systemd and
# systemd-container for systemd-analyze, systemd-socket-activate and systemd-nspawn (test/systemd);
# dpkg-dev (dpkg-shlibdeps) and binutils (strip) for make deb; libcryptsetup-dev, pkg-config,
# clang and libclang-rt-14-dev (libFuzzer) for the privileged helper (helper/).
DEB_PACKAGES := python3-barbican barbican-common python3-keystone python3-keystoneclient \
  python3-barbicanclient python3-castellan python3-os-brick python3-paste python3-pastedeploy python3-pykmip openssl \
  qemu-system-x86 linux-image-amd64 busybox-static cryptsetup-bin dmsetup kmod e2fsprogs util-linux diffutils \
  systemd systemd-container dpkg-dev binutils libcryptsetup-dev libblkid-dev pkg-config clang libclang-rt-14-dev

.PHONY: help deps build test test-vm soak demo bench kmip-dev clean deb helper fuzz-helper

help:
	@echo "make demo   install what is missing, build, and attach an encrypted volume through portcullisd (local keystore)"
	@echo "make test   install what is missing (Debian packages, npm ci), build, run every test"
	@echo "make test-vm  only the privileged tests (*.vm.test.ts): dm-crypt in the qemu VM, or directly on a host with device-mapper"
	@echo "make soak   the long runs: the socket API fuzz with 100,000 cases (PORTCULLIS_FUZZ_RUNS) and 1,002 data-integrity cycles in the VM (PORTCULLIS_INTEGRITY_CYCLES)"
	@echo "make build  compile TypeScript to dist/, the native addon and the privileged helper (helper/build/)"
	@echo "make fuzz-helper [FUZZ_SECONDS=60]  libFuzzer over the helper's frame decoder and field checks"
	@echo "make bench  run the benches (bench/*.ts, never part of make test), write bench/results/*.json and docs/benchmarks.md"
	@echo "make kmip-dev  a throwaway PyKMIP server on 127.0.0.1:5696 for examples/kmip.yaml (certificates in /tmp/portcullis-kmip/)"
	@echo "make install [PREFIX=/usr/local] [DESTDIR=]  install the build, units, default config, man pages (see docs/install.md)"
	@echo "make uninstall  remove what install put (not the config, not /var/lib/portcullis)"
	@echo "make deb   build, then the Debian package dist-deb/portcullis_VERSION_ARCH.deb (apt install ./dist-deb/portcullis_*.deb; docs/install.md)"

deps: node_modules/.installed .cache/deb-installed

.cache/deb-installed: Makefile
	@mkdir -p .cache
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages: $$missing; run make as root or install them" >&2; exit 1; fi; \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci
	@touch $@

# npm ci builds native/ too (the install script); rebuild here when its C source changes.
native/build/Release/portcullis_native.node: $(wildcard native/src/*.c native/src/*.h) native/binding.gyp node_modules/.installed
	node scripts/build-native.mjs

build: node_modules/.installed native/build/Release/portcullis_native.node helper
	rm -rf dist
	npx tsc -p tsconfig.json

# The privileged helper (C on libcryptsetup, docs/helper-protocol.md); its sanitizer build for the tests.
helper:
	$(MAKE) -C helper all asan

# libFuzzer over the helper's frame decoder and every op's field checks; crashes land in helper/build/fuzz-crashes/.
FUZZ_SECONDS ?= 60
fuzz-helper:
	$(MAKE) -C helper fuzz
	mkdir -p helper/build/fuzz-corpus helper/build/fuzz-crashes
	helper/build/fuzz-request -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=helper/build/fuzz-crashes/ \
	  helper/build/fuzz-corpus helper/fuzz/corpus

test: deps build
	node scripts/run-tests.mjs

# Privileged tests are named *.vm.test.ts; test/vm decides VM or direct mode.
test-vm: deps build
	node scripts/run-tests.mjs .vm.test.

# Long runs: the socket API fuzz at 100,000 cases (make test runs 10,000) and the data-integrity
# cycles at 1,002 (make test runs 102), under budgets that fit them.
SOAK_FUZZ_RUNS ?= 100000
SOAK_INTEGRITY_CYCLES ?= 1002
soak: deps build
	PORTCULLIS_FUZZ_RUNS=$(SOAK_FUZZ_RUNS) PORTCULLIS_INTEGRITY_CYCLES=$(SOAK_INTEGRITY_CYCLES) TEST_HOST_BUDGET=1800 TEST_VM_BUDGET=5400 \
	  node scripts/run-tests.mjs api/fuzz.test. daemon/integrity.vm. soak

# The daemon on the local keystore attaching a real encrypted volume, end to end;
# in the project's VM where this host has no device-mapper.
demo: deps build
	node dist/scripts/demo.js

# Benches (issue 11): each writes bench/results/NAME.json and prints its tables; none asserts a
# time. One line per bench, run in this order, niced (the machine may be shared); add a bench by
# adding its line. The report then rewrites docs/benchmarks.md and docs/benchmarks-attach.svg from
# every results file present. Not part of `make test`.
BENCH_RUN := nice -n 10 node
BENCHES := \
  'dist/bench/vm-attach.js' \
  '--expose-gc dist/bench/memory-start.js' \
  'dist/bench/key-cache.js' \
  'dist/bench/fleet.js'

# The commit and tree state are taken once, before the first bench rewrites a tracked results
# file; every results file records them (bench/results.ts) and the report prints them.
bench: deps build
	@set -e; export PORTCULLIS_BENCH_COMMIT="$$(git rev-parse HEAD)" PORTCULLIS_BENCH_STATUS="$$(git status --porcelain)"; \
	  for b in $(BENCHES); do echo "== $$b"; $(BENCH_RUN) $$b; done
	node dist/bench/report.js

# A development KMIP server (PyKMIP) that examples/kmip.yaml works against as shipped; Ctrl-C stops it.
kmip-dev:
	scripts/kmip-dev-server

clean:
	rm -rf dist .cache dist-deb helper/build

# The Debian package, with dpkg-deb (no debhelper): scripts/make-deb stages `make install
# PREFIX=/usr NODE=/usr/bin/node` and adds DEBIAN/ from packaging/deb/. Architecture-specific
# (the native addons); its Node.js dependency is the major that built them.
deb: build
	scripts/make-deb dist-deb

# make install: GNU-style directories; DESTDIR stages a package. systemd also
# searches $(PREFIX)/lib/{systemd/system,sysusers.d,tmpfiles.d} for PREFIX=/usr/local.
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
LIBDIR ?= $(PREFIX)/lib
PKGLIBDIR ?= $(LIBDIR)/portcullis
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= $(LIBDIR)/systemd/system
SYSUSERSDIR ?= $(LIBDIR)/sysusers.d
TMPFILESDIR ?= $(LIBDIR)/tmpfiles.d
# The node the wrappers exec; it must be outside /home and /root (ProtectHome=yes).
NODE ?= $(shell command -v node)
INSTALL_NEEDS := dist/src/daemon/portcullisd.js dist/src/cli/main.js native/build/Release/portcullis_native.node node_modules/.package-lock.json helper/build/portcullis-helper

.PHONY: install uninstall

# Copies what `make build` made (run that first, as yourself): never runs npm or tsc as root.
# Production dependencies only; the config only when there is none.
install:
	@for f in $(INSTALL_NEEDS); do [ -e "$$f" ] || { echo "make install: $$f is missing; run make build first" >&2; exit 1; }; done
	@case '$(NODE)' in /home/*|/root/*) echo "make install: node is $(NODE), which ProtectHome=yes hides from portcullis.service; install Node.js system-wide or pass NODE=/usr/bin/node" >&2; exit 1;; /*) ;; *) echo "make install: no node found; pass NODE=/path/to/node" >&2; exit 1;; esac
	@case '$(PKGLIBDIR)' in */portcullis) ;; *) echo "make install: PKGLIBDIR must end in /portcullis (it is replaced whole)" >&2; exit 1;; esac
	rm -rf '$(DESTDIR)$(PKGLIBDIR)'
	install -d -m 0755 '$(DESTDIR)$(PKGLIBDIR)/dist' '$(DESTDIR)$(PKGLIBDIR)/native/build/Release' \
	  '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(SBINDIR)' '$(DESTDIR)$(SYSTEMDUNITDIR)' '$(DESTDIR)$(SYSUSERSDIR)' \
	  '$(DESTDIR)$(TMPFILESDIR)' '$(DESTDIR)$(MANDIR)/man8' '$(DESTDIR)$(SYSCONFDIR)/portcullis'
	tar -C dist --exclude='*.map' -cf - src native | tar -C '$(DESTDIR)$(PKGLIBDIR)/dist' --no-same-owner -xf -
	@# The packages npm installed that are not dev-only, from its own record of the tree: unlike
	@# `npm ls --omit=dev`, which also lists extraneous ones (a devDependency's dependency left in a
	@# node_modules shared between worktrees or made by an older lockfile). Nested ones come with their parent.
	mods=$$(node -e 'const { existsSync } = require("node:fs"); for (const [path, meta] of Object.entries(require("./node_modules/.package-lock.json").packages)) if (!meta.dev && !path.includes("/node_modules/") && existsSync(path)) console.log(path)') && \
	  tar -cf - $$mods | tar -C '$(DESTDIR)$(PKGLIBDIR)' --no-same-owner -xf -
	install -m 0644 package.json '$(DESTDIR)$(PKGLIBDIR)/'
	install -m 0644 native/binding.gyp '$(DESTDIR)$(PKGLIBDIR)/native/'
	install -m 0755 native/build/Release/portcullis_native.node '$(DESTDIR)$(PKGLIBDIR)/native/build/Release/'
	@# The privileged helper, where the daemon looks for it (luks.helper_path's default).
	install -D -m 0755 helper/build/portcullis-helper '$(DESTDIR)$(PKGLIBDIR)/helper/portcullis-helper'
	chmod -R u=rwX,go=rX '$(DESTDIR)$(PKGLIBDIR)'
	printf '#!/bin/sh\n# portcullis admin CLI (make install)\nexec %s %s "$$@"\n' '$(NODE)' '$(PKGLIBDIR)/dist/src/cli/main.js' > '$(DESTDIR)$(BINDIR)/portcullis'
	printf '#!/bin/sh\n# portcullisd (make install); exec, so that systemd watches node itself (NotifyAccess=main)\nexec %s %s "$$@"\n' '$(NODE)' '$(PKGLIBDIR)/dist/src/daemon/portcullisd.js' > '$(DESTDIR)$(SBINDIR)/portcullisd'
	chmod 0755 '$(DESTDIR)$(BINDIR)/portcullis' '$(DESTDIR)$(SBINDIR)/portcullisd'
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' systemd/portcullis.service.in > '$(DESTDIR)$(SYSTEMDUNITDIR)/portcullis.service'
	chmod 0644 '$(DESTDIR)$(SYSTEMDUNITDIR)/portcullis.service'
	install -m 0644 systemd/portcullis.socket '$(DESTDIR)$(SYSTEMDUNITDIR)/portcullis.socket'
	sed -e 's|@PKGLIBDIR@|$(PKGLIBDIR)|g' systemd/portcullis-helper.service.in > '$(DESTDIR)$(SYSTEMDUNITDIR)/portcullis-helper.service'
	chmod 0644 '$(DESTDIR)$(SYSTEMDUNITDIR)/portcullis-helper.service'
	install -m 0644 systemd/portcullis-helper.socket '$(DESTDIR)$(SYSTEMDUNITDIR)/portcullis-helper.socket'
	install -m 0644 systemd/portcullis.sysusers '$(DESTDIR)$(SYSUSERSDIR)/portcullis.conf'
	install -m 0644 systemd/portcullis.tmpfiles '$(DESTDIR)$(TMPFILESDIR)/portcullis.conf'
	install -m 0644 docs/man/portcullis.8 docs/man/portcullisd.8 '$(DESTDIR)$(MANDIR)/man8/'
	@if [ -e '$(DESTDIR)$(SYSCONFDIR)/portcullis/portcullis.yaml' ]; then \
	  echo "kept the existing $(DESTDIR)$(SYSCONFDIR)/portcullis/portcullis.yaml (the new default is systemd/portcullis.yaml)"; \
	else install -m 0644 systemd/portcullis.yaml '$(DESTDIR)$(SYSCONFDIR)/portcullis/portcullis.yaml'; fi
	@echo "installed; next (docs/install.md): systemd-sysusers; systemd-tmpfiles --create portcullis.conf; make the KEK; systemctl daemon-reload"

# Removes what install put; keeps the config and KEK ($(SYSCONFDIR)/portcullis) and the keystore (/var/lib/portcullis).
uninstall:
	@case '$(PKGLIBDIR)' in */portcullis) ;; *) echo "make uninstall: PKGLIBDIR must end in /portcullis" >&2; exit 1;; esac
	rm -rf '$(DESTDIR)$(PKGLIBDIR)'
	rm -f '$(DESTDIR)$(BINDIR)/portcullis' '$(DESTDIR)$(SBINDIR)/portcullisd' \
	  '$(DESTDIR)$(SYSTEMDUNITDIR)/portcullis.service' '$(DESTDIR)$(SYSTEMDUNITDIR)/portcullis.socket' \
	  '$(DESTDIR)$(SYSTEMDUNITDIR)/portcullis-helper.service' '$(DESTDIR)$(SYSTEMDUNITDIR)/portcullis-helper.socket' \
	  '$(DESTDIR)$(SYSUSERSDIR)/portcullis.conf' '$(DESTDIR)$(TMPFILESDIR)/portcullis.conf' \
	  '$(DESTDIR)$(MANDIR)/man8/portcullis.8' '$(DESTDIR)$(MANDIR)/man8/portcullisd.8'
	@echo "kept $(SYSCONFDIR)/portcullis (config, KEK) and /var/lib/portcullis (keystore)"
