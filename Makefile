# Everything a developer or CI needs, from a clean clone. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KAFKA_LIBS := .kafka/libs
DEMO_DIR := out/demo

.DEFAULT_GOAL := help
.PHONY: help install test test-large test-unit test-integration lint format kafka kafka-3 kafka-stop \
        kafka-fetch demo docs-img schema bench bench-live baselines clean

help:  ## list targets
	@grep -E '^[a-z0-9./-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with dev tools

kafka-fetch:  ## download the Kafka broker jars with Maven (cached in .kafka/libs)
	$(PYTHON) tools/kafka/localkafka.py fetch

test: $(STAMP) kafka-fetch  ## run the whole suite (starts its own Kafka unless KAFKA_BOOTSTRAP_SERVERS is set)
	$(PY) -m pytest -q

test-large: $(STAMP) kafka-fetch  ## a million users on the RocksDB store (make test runs 100,000)
	LARGE_STATE_USERS=1000000 $(PY) -m pytest -q -s tests/integration/test_large_state.py

test-unit: $(STAMP)  ## only the tests that need no broker
	$(PY) -m pytest -q -m "not integration"

lint: $(STAMP)  ## ruff + mypy strict on stream_app and schemas
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

kafka: kafka-fetch  ## start a local single-node Kafka (KRaft) on 127.0.0.1:9092 in the background
	$(PYTHON) tools/kafka/localkafka.py start

kafka-3: kafka-fetch  ## start a three-node Kafka (replication factor 3) on 9092/9094/9096
	$(PYTHON) tools/kafka/localkafka.py start --brokers 3

deploy/worker.env:  ## the docker compose worker's secrets: a random STREAM_APP_API_TOKEN (mode 600)
	@umask 077; printf 'STREAM_APP_API_TOKEN=%s\n' \
	    "$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')" > $@
	@echo "wrote $@ (keep it secret; send the token as 'Authorization: Bearer <token>')"

kafka-stop:  ## stop the local Kafka
	$(PYTHON) tools/kafka/localkafka.py stop

schema: $(STAMP)  ## regenerate schemas/json from the pydantic models
	$(VENV)/bin/stream-app schema --out schemas/json

# Ctrl-C: the demo stops what it started and exits 130; the recipe's shell ignores the SIGINT
# (the demo installs its own handler) and takes 130 as a clean stop, so make does not end
# with "*** Error 130" (nor "Interrupt": the shell does not die of the signal).
demo: $(STAMP) kafka-fetch  ## two months of traffic through a live worker that learns and intervenes (DEMO_ARGS=--keep: stay up)
	@# Ctrl-C is how a kept demo ends: exit 130 is a stop, not "make: *** Error 130".
	@trap '' INT; $(PY) tools/demo.py --dir $(DEMO_DIR) $(DEMO_ARGS) || { rc=$$?; \
	    if [ $$rc -eq 130 ]; then echo "demo stopped (Ctrl-C)"; else exit $$rc; fi; }

docs-img: $(STAMP)  ## the README's report figures: the demo's data and settings at 10,000 users, offline
	$(PY) tools/demo.py --report-only --users 10000 --dir out/docs-img
	@mkdir -p docs/img/demo
	cp out/docs-img/report/{rolling_auc,calibration,interventions,uplift}.png docs/img/demo/

bench: $(STAMP)  ## speed and memory benchmark of the offline engine (figures in bench/results)
	$(PY) bench/run.py

bench-live: $(STAMP) kafka-fetch  ## live worker vs a naive Faust agent, Faust's floor, the consume ceiling, latency and sustained load (ARGS="--runs 3"; bench/results/live.json)
	$(PY) bench/live.py $(ARGS)

BENCH_EVENTS := out/bench/events.jsonl
baselines: $(STAMP)  ## engine vs BG/NBD, RFM regression and recency at a cutoff (bench data)
	@test -f $(BENCH_EVENTS) || $(PY) -m stream_app.cli generate --users 3000 --days 180 \
	    --seed 1 --out $(BENCH_EVENTS)
	@for run in "all 30 2026-05-31" "all 60 2026-05-01" "purchases 30 2026-05-31" \
	            "purchases 60 2026-05-01"; do \
	    set -- $$run; \
	    flag=$$([ $$1 = purchases ] && echo --purchases-only); \
	    $(PY) bench/baselines.py $(BENCH_EVENTS) --cutoff $${3}T00:00:00Z --horizon-days $$2 \
	        $$flag --out bench/results/baselines_$${1}_$${2}d.json || exit 1; \
	done

clean:  ## remove the venv, caches, Kafka jars and demo output
	rm -rf $(VENV) .kafka out .pytest_cache .mypy_cache .ruff_cache .hypothesis

.PHONY: real-data baselines-real
REAL_DIR := out/real
REAL_SAMPLE := $(REAL_DIR)/cdnow_sample.jsonl
$(REAL_SAMPLE): bench/real_data.py | $(STAMP)
	@mkdir -p $(REAL_DIR)
	@test -f $(REAL_DIR)/Lifetimes-0.11.3-py3-none-any.whl || $(PY) -m pip download -q \
	    --no-deps lifetimes==0.11.3 -d $(REAL_DIR)
	$(PY) bench/real_data.py --dir $(REAL_DIR)

real-data: $(REAL_SAMPLE)  ## the CDNOW purchase log as events (out/real; dev sample + acceptance set)

baselines-real: $(REAL_SAMPLE)  ## engine vs the batch baselines on the CDNOW sample (dev set)
	@for run in "180 1997-10-01" "90 1998-01-01"; do \
	    set -- $$run; \
	    $(PY) bench/baselines.py $(REAL_SAMPLE) --cutoff $${2}T00:00:00Z --horizon-days $$1 \
	        --purchases-only --out bench/results/baselines_real_$${1}d.json || exit 1; \
	done
