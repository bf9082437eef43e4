# ScheduleZero operator. The two commands a newcomer needs:
#   make run    local control plane + CRDs + operator + example handler + Schedule
#   make test   lint, unit, integration and e2e tests (starts its own local cluster
#               unless KUBECONFIG points at one); builds the images first
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/hack$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help venv binaries images push cluster-up cluster-down run test lint unit e2e crds check-crds bench bench-dispatch bench-sdk-rss bench-sdk-burst bench-timing bench-firing bench-cronjob bench-fleet bench-growth bench-replicas bench-plots faults soak clean

help:
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP) ## create .venv with the operator, SDK and dev tools

binaries: ## build etcd + kube-apiserver/controller-manager/scheduler (cached by version)
	bash hack/build-binaries.sh

images: $(STAMP) ## container images (operator, handler base, examples) without Docker; cached
	$(PY) -m schedulezero_testcluster.imagebuild build

push: $(STAMP) ## copy the built images to a registry: make push REGISTRY=registry.example/you
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host/namespace" >&2; exit 2; }
	$(PY) -m schedulezero_testcluster.imagebuild push "$(REGISTRY)"

cluster-up: $(STAMP) ## start the local control plane in the background
	@$(PY) -m schedulezero_testcluster up

cluster-down: $(STAMP) ## stop the local control plane and everything it started
	@$(PY) -m schedulezero_testcluster down

run: $(STAMP) images ## cluster up, then show what runs on it
	@bash hack/run.sh

lint: $(STAMP) ## ruff + mypy
	$(VENV)/bin/ruff check operator handler_sdk hack tests bench examples
	$(VENV)/bin/mypy operator/schedulezero_operator handler_sdk/schedulezero_handler hack/schedulezero_testcluster

unit: $(STAMP) ## unit tests only (no cluster)
	$(PY) -m pytest tests/unit -q

test: $(STAMP) binaries images lint ## everything: lint, unit, integration, e2e (incl. pods from the images)
	$(PY) -m pytest tests -q -p no:cacheprovider

faults: $(STAMP) binaries ## every fault scenario, full size (CI runs compact forms in `make test`)
	SZ_FAULTS_FULL=1 $(PY) -m pytest -q -p no:cacheprovider tests/faults \
		tests/e2e/test_ha.py tests/e2e/test_sharding.py tests/e2e/test_legacy_handlers.py

soak: $(STAMP) binaries ## 10 min, 2 replicas, 100 fires/s, pod kill every 30 s, leader kill every 2 min
	$(PY) bench/soak.py --minutes 10

crds: $(STAMP) ## regenerate crds/ and the chart's crds/ from the models
	$(PY) -m schedulezero_operator.api.crd

bench: bench-dispatch bench-sdk-rss bench-sdk-burst bench-timing ## the benchmarks that need no cluster

bench-dispatch: $(STAMP) ## dispatch round trips, SDK vs raw pyzmq (bench/results/dispatch.json)
	$(PY) bench/dispatch.py

bench-sdk-rss: $(STAMP) ## idle RSS of a minimal ZMQ handler vs asyncio+pyzmq alone (bench/results/sdk_rss.json)
	$(PY) bench/sdk_rss.py

bench-sdk-burst: $(STAMP) ## how long the SDK takes to start a held burst of 1,000 jobs (bench/results/sdk-burst-1000.json)
	$(PY) bench/sdk_burst.py --jobs 1000

bench-timing: $(STAMP) ## next-fire per second, every trigger kind (bench/results/timing.json)
	$(PY) bench/timing.py

bench-firing: $(STAMP) binaries ## 1,000 Schedules: interval, cron mix, same-second bursts
	$(PY) bench/firing.py --schedules 1000 --period 2s --seconds 30
	$(PY) bench/firing.py --schedules 1000 --mix cron --seconds 70
	$(PY) bench/firing.py --schedules 100 --mix burst --seconds 60
	$(PY) bench/firing.py --schedules 1000 --mix burst --seconds 60

bench-fleet: $(STAMP) binaries ## 10,000 stored Schedules at operator start: arming time, RSS, idle CPU
	$(PY) bench/fleet.py --schedules 10000

bench-growth: $(STAMP) binaries ## 100 -> 1,000 -> 10,000 Schedules at 100 fires/s (bench/results/growth.json)
	$(PY) bench/growth.py --kind growth

bench-replicas: $(STAMP) binaries ## 1 vs 2 operator replicas at 100, 250, 500 fires/s
	$(PY) bench/growth.py --kind replicas

bench-plots: $(STAMP) ## lateness CDF and growth PNGs from the saved results
	$(PY) bench/plots.py

bench-cronjob: $(STAMP) binaries ## N minute-crons due at one second: CronJob vs Schedule (N = 10, 100)
	$(PY) bench/vs_cronjob.py --n 10 100

clean: cluster-down
	rm -rf .localcluster
