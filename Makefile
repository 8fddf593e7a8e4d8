# Quick start: `make demo` runs a screening day end to end; `make test` runs the tests.
# Both install what they need on first use (scripts/setup.sh) and share one build.

CARGO ?= cargo

.PHONY: demo test setup setup-test build lint bench serve train

demo: setup build
	$(CARGO) run --quiet -- demo

test:
	scripts/test.sh

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --test

build:
	$(CARGO) build

serve: setup build
	$(CARGO) run --quiet -- serve

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: setup
	$(CARGO) bench --bench pipeline
	$(CARGO) bench --bench hostile

# Retrain the shipped model (not part of demo or test): see models/README.md.
train: setup build
	models/retrain.sh
