# raytasks: `make run` (evaluate the shipped models) and `make test` bootstrap .venv first.
SHELL := /bin/bash
PY := .venv/bin/python
RT := .venv/bin/raytasks
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: run test test-fast data describe lint bench clean help cluster-up cluster-down submit jobs logs stop pull leaderboard
NODES ?= 1

help:  ## list the targets and the variables they read
	@echo "targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'
	@echo "variables (make VAR=value target, or export them):"
	@grep -E '^# VAR ' $(MAKEFILE_LIST) | sed -E 's/^# VAR /  /'
	@echo "examples:"
	@echo "  make submit SPACE=cnn1d ARGS=\"--samples 2 --max-epochs 2\""
	@echo "  make logs JOB=<submission id> ARGS=\"--follow\""

# VAR SPACE=<name>       submit: search space, searchspaces/<SPACE>.toml (gru, cnn1d, all, ...)
# VAR ARGS="..."         submit: flags for the search (raytasks tune -h); logs: --tail N / --follow
# VAR JOB=<id>           logs, stop, pull: a submission id (make jobs), or an experiment for pull
# VAR DATA=<file>        run: evaluate on this hackathon parquet / Kaggle CSV instead
# VAR NODES=1            cluster-up: raylets on this machine (2 acts as a 2-node cluster)
# VAR RAYTASKS_DEV=<tag> your dev tag (else config.toml 'dev'); also RAYTASKS_PORT, RAYTASKS_STORAGE
# VAR MITDB_DIR=<dir>    data: raw MIT-BIH records (else config.toml 'records', else download)
# VAR WANDB_MODE=online  tune/submit: log to W&B online (default offline unless WANDB_API_KEY)

# the venv is stale when pyproject.toml is newer than it
.venv/.installed: pyproject.toml
	@test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

data: .venv/.installed  ## build intra and inter shards (MITDB_DIR, else PhysioNet download)
	$(RT) data build --scheme all

describe: data  ## class counts per split + plots in results/data/
	$(RT) data describe

run: .venv/.installed  ## evaluate every model in models/ -> results/output.csv (DATA=file: on that file)
ifdef DATA
	$(RT) evaluate --file "$(DATA)"
else
	$(RT) data build --scheme intra
	$(RT) evaluate --split valid
endif

# Ray must never reach outside this machine: where `unshare -n` works (Linux, root), the tests
# run in a private network namespace with only loopback up (Ray probes cloud addresses)
in_netns = if [ -z "$$RAYTASKS_NETNS" ] && unshare -n true 2>/dev/null; then exec unshare -n \
	sh -c 'ip link set lo up; RAYTASKS_NETNS=1 $(MAKE) --no-print-directory $@'; fi

test: .venv/.installed  ## the whole test suite (inside `unshare -n` where it can)
	@$(in_netns); $(PY) -m pytest -q --durations=15 tests

test-fast: .venv/.installed  ## the tests that start no Ray and take seconds (< 60 s)
	@$(in_netns); RAYTASKS_TEST_NO_RAY=1 $(PY) -m pytest -q -m "not ray and not cluster and not slow" tests

lint: .venv/.installed  ## ruff: the rules and the formatter's layout; mypy on core/ and models/saved.py
	.venv/bin/ruff check raytasks tests bench
	.venv/bin/ruff format --check raytasks tests bench
	.venv/bin/mypy

bench: .venv/.installed  ## speed scripts in bench/
	for f in bench/*.py; do $(PY) $$f || exit 1; done

cluster-up: .venv/.installed  ## local head on 127.0.0.1:<port> (NODES=2 adds a second raylet); prints the exports
	$(RT) cluster up --nodes $(NODES)

cluster-down: .venv/.installed  ## stop this team's local cluster (only its processes)
	$(RT) cluster down

submit: .venv/.installed  ## ray job submit a search as you: make submit SPACE=gru ARGS="--samples 20"
	@test -n "$(SPACE)" || { echo "usage: make submit SPACE=gru [ARGS=...]"; exit 2; }
	$(RT) submit --space $(SPACE) -- $(ARGS)

jobs: .venv/.installed  ## your jobs on the cluster and their status
	$(RT) jobs

logs: .venv/.installed  ## make logs JOB=<submission id>
	@test -n "$(JOB)" || { echo "usage: make logs JOB=<submission id>"; exit 2; }
	$(RT) logs $(JOB) $(ARGS)

stop: .venv/.installed  ## make stop JOB=<submission id>
	@test -n "$(JOB)" || { echo "usage: make stop JOB=<submission id>"; exit 2; }
	$(RT) stop $(JOB)

pull: .venv/.installed  ## make pull JOB=<submission id or experiment>: its models and results, here
	@test -n "$(JOB)" || { echo "usage: make pull JOB=<submission id or experiment>"; exit 2; }
	$(RT) pull $(JOB)

leaderboard: .venv/.installed  ## the team leaderboard (every dev's rows in storage) -> results/
	$(RT) leaderboard

clean:  ## remove derived data and runs (not models/ or results/)
	rm -rf data/processed runs wandb
