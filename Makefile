# portcullis — the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PREFIX ?= /usr/local

# Debian packages the tests need: real Barbican, Keystone and the reference clients;
# a kernel, qemu and busybox for the dm-crypt VM; cryptsetup and friends.
DEB_PACKAGES := python3-barbican barbican-common python3-keystone python3-keystoneclient \
  python3-barbicanclient python3-castellan python3-os-brick python3-paste python3-pastedeploy openssl \
  qemu-system-x86 linux-image-amd64 busybox-static cryptsetup-bin dmsetup kmod e2fsprogs util-linux diffutils

.PHONY: help deps build test test-vm demo clean

help:
	@echo "make demo   install what is missing, build, and show portcullis at work on the local keystore"
	@echo "make test   install what is missing (Debian packages, npm ci), build, run every test"
	@echo "make test-vm  only the privileged tests (*.vm.test.ts): dm-crypt in the qemu VM, or directly on a host with device-mapper"
	@echo "make build  compile TypeScript to dist/"

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

build: node_modules/.installed
	npx tsc -p tsconfig.json

test: deps build
	node scripts/run-tests.mjs

# Privileged tests are named *.vm.test.ts; test/vm decides VM or direct mode.
test-vm: deps build
	node scripts/run-tests.mjs .vm.test.

demo: node_modules/.installed build
	scripts/demo.sh

clean:
	rm -rf dist .cache
