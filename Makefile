# Flotilla's entry points. `make setup` prepares a fresh machine; `make test` is what CI runs.
SHELL := /bin/bash
export ONNXRUNTIME_NODE_INSTALL := skip

FASHION_MNIST ?= /usr/share/datasets/fashion-mnist
EPOCHS ?= 10

.PHONY: setup deps data build crds lint format test train bench bench-runtime bench-niid clean

## setup: install npm packages and the Fashion-MNIST dataset, then build
setup: deps data build

deps:
	npm ci --no-audit --no-fund

# Installed once, and again when the lock file changes, so `make test` works on a fresh machine.
node_modules: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch node_modules

# Debian's dataset-fashion-mnist ships the IDX files the examples and tests train on.
data:
	@if [ ! -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; fi; \
	fi

build:
	npx tsc -p tsconfig.build.json

## crds: regenerate the FederatedJob CRD (crds/ and the chart) from operator/api/federatedjob.ts
crds: build
	node dist/operator/api/generate-crd.js

lint:
	npx eslint .
	npx prettier --check .
	npx tsc -p tsconfig.json --noEmit

format:
	npx prettier --write .

## test: unit and integration tests (builds first: some tests run the compiled CLI)
# The last line is the plain "N passed, N failed, N skipped" summary CI reads.
# The e2e tests (test/e2e/) run against the local cluster, built if missing, started here and
# stopped after. A cluster that cannot build or start fails those tests, not the unit tests.
test: node_modules data build
	@mkdir -p dist
	-@$(MAKE) --no-print-directory cluster-up
	npx jest --ci --json --outputFile=dist/jest-results.json; status=$$?; \
	  $(MAKE) --no-print-directory cluster-down; \
	  node -e 'const r=require("./dist/jest-results.json"); console.log(`Tests: $${r.numPassedTests} passed, $${r.numFailedTests} failed, $${r.numPendingTests + r.numTodoTests} skipped`)'; \
	  exit $$status

## train: train the simple CNN on Fashion-MNIST on this machine
train: node_modules data build
	node bin/flotilla.js train --model cnn --data $(FASHION_MNIST) --epochs $(EPOCHS)

## bench: print throughput figures next to their baselines
bench: build
	node dist/bench/engine-throughput.js

## bench-runtime: update transport, FedAvg fold, aggregator memory and round overhead, each beside its baseline
bench-runtime: build
	node dist/bench/transport.js
	node dist/bench/fold.js
	node dist/bench/aggregator-memory.js
	node dist/bench/orchestration.js

## bench-niid: NIID-Bench's Fashion-MNIST CNN run (10 sites, Dirichlet 0.5, 50 rounds x 10 epochs): hours on CPU
## (NIID_SCHEME=iid for the IID baseline, NIID_STRATEGY=fedprox|fedadam|... for other strategies)
NIID_STRATEGY ?= fedavg
NIID_SCHEME ?= dirichlet
NIID_MU ?= $(if $(filter fedprox,$(NIID_STRATEGY)),0.01,0)
NIID_RUN := niid-$(NIID_SCHEME)-$(NIID_STRATEGY)
bench-niid: build
	sed -e 's/strategy: fedavg/strategy: $(NIID_STRATEGY)/' -e 's/proximalMu: 0 /proximalMu: $(NIID_MU) /' \
	  -e 's/scheme: dirichlet/scheme: $(NIID_SCHEME)/' examples/niid-bench-fmnist-cnn.yaml > dist/$(NIID_RUN).yaml
	node bin/flotilla.js simulate dist/$(NIID_RUN).yaml --out flotilla-sim/$(NIID_RUN)

clean:
	rm -rf dist coverage

## demo: on the local control plane, install the chart, apply examples/fashion-mnist-cluster.yaml
## and watch `kubectl get fedjobs -w` until the job ends (builds and splits the data first)
DEMO_DATA ?= /var/tmp/flotilla-demo
DEMO_KUBECONFIG = $(or $(FLOTILLA_CLUSTER_RUN),$(CURDIR)/test/cluster/.build/run)/admin.kubeconfig
DEMO_KUBECTL = KUBECONFIG=$(DEMO_KUBECONFIG) $(CLUSTER_BIN)/kubectl
.PHONY: demo
demo: node_modules
	$(MAKE) --no-print-directory data build cluster-up
	@test -f $(DEMO_DATA)/partition.json || node bin/flotilla.js data partition \
	  --data $(FASHION_MNIST) --out $(DEMO_DATA) --sites 2 --scheme dirichlet --alpha 0.5 --seed 7
	# It watches the example's namespace only, so e2e tests on the same cluster keep their own.
	KUBECONFIG=$(DEMO_KUBECONFIG) $(CLUSTER_BIN)/helm upgrade --install flotilla charts/flotilla \
	  --namespace flotilla-system --create-namespace --set watchNamespace=default \
	  --wait --timeout 3m
	$(DEMO_KUBECTL) delete -f examples/fashion-mnist-cluster.yaml --ignore-not-found --wait
	$(DEMO_KUBECTL) apply -f examples/fashion-mnist-cluster.yaml
	@$(DEMO_KUBECTL) get fedjobs -w & watcher=$$!; \
	  until phase=$$($(DEMO_KUBECTL) get fedjob fashion-mnist -o jsonpath='{.status.phase}') && \
	    { [ "$$phase" = Succeeded ] || [ "$$phase" = Failed ]; }; do sleep 2; done; \
	  sleep 1; kill $$watcher; echo; \
	  $(DEMO_KUBECTL) get fedjob fashion-mnist; \
	  uid=$$($(DEMO_KUBECTL) get fedjob fashion-mnist -o jsonpath='{.metadata.uid}'); \
	  $(DEMO_KUBECTL) get events --field-selector involvedObject.uid=$$uid \
	    --sort-by=.lastTimestamp -o custom-columns=REASON:.reason,MESSAGE:.message; \
	  [ "$$phase" = Succeeded ]

include test/cluster/cluster.mk
