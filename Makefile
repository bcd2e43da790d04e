# Two commands for a new user: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test deploy-local bench bench-tourism bench-customer install browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sovereign demo

# The service path on one machine: the coordinator service, a TLS SuperLink and five SuperNodes
# on loopback; a job approved by each branch's IT, then serving until Ctrl-C.
deploy-local: $(STAMP)
	$(BIN)/sovereign deploy-local --branches 5

# The console's browser tests drive Debian's Chromium (no browser download from pip or npm).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null)

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=12

# The standard benchmark set (experiments/results/*.json): the simulated alliance at 20 and 127
# branches, and the Tourism competition's monthly and quarterly series split into 20 branches.
bench: $(STAMP)
	$(BIN)/python experiments/federated_vs_local.py --seeds 1 2 3 4 5 --branches 20
	$(BIN)/python experiments/federated_vs_local.py --seeds 1 2 3 --branches 127 --name federated_vs_local_127
	$(BIN)/python experiments/tourism.py --configs experiments/configs/tourism_monthly_20.yaml experiments/configs/tourism_quarterly_20.yaml

# Every Tourism config: 20 and 127 branches, and histories cut to 24 and 36 months (about 30 minutes).
bench-tourism: $(STAMP)
	$(BIN)/python experiments/tourism.py

# What customer-level privacy costs (ε 0.5 to 4 per year against the same job without it, 20 and
# 127 branches, 3 seeds: about an hour on 2 cores), and its empirical audit (a few minutes).
bench-customer: $(STAMP)
	$(BIN)/python experiments/customer_dp.py --branches 20 127 --seeds 1 2 3
	$(BIN)/python experiments/customer_audit.py --branches 4 --trials 2000

clean:
	rm -rf $(VENV) runs
