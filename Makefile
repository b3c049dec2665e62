# BackHug: the two commands are `make run` and `make test`; each installs what it needs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
# The prerequisite `setup` has just run: env.sh need not check again.
ENV := BACKHUG_ENV_NO_SETUP=1 source ./env.sh &&

.PHONY: help setup run test lint bench faults clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' Makefile | sed 's/:.*## /\t/'

setup:  ## install (venv, system packages) and build the workspace
	@tools/setup.sh

run: setup  ## the main job: bring the system up on the simulated device and run a treatment
	@$(ENV) backhug run $(ARGS)

test: setup  ## all tests and linters; exits non-zero when any fails
	@$(ENV) tools/run_tests.sh $(ARGS)

bench: setup  ## performance figures of this machine -> bench/results.json, bench/results.md
	@$(ENV) python bench/run_bench.py $(ARGS)

faults: setup  ## long fuzz run of the parsers, then the randomised fault campaign -> bench/faults.json
	@$(ENV) BACKHUG_FUZZ_EXAMPLES=$${BACKHUG_FUZZ_EXAMPLES:-1000} python -m pytest -q -p no:cacheprovider \
		src/backhug_programs/test/test_fuzz_schema.py src/backhug_hw_interface/test/test_protocol.py
	@$(ENV) python bench/faults.py $(ARGS)

lint: setup  ## linters only
	@$(ENV) ruff check . && ruff format --check .

clean:  ## remove build products and the venv
	rm -rf build install log .venv .build.lock
