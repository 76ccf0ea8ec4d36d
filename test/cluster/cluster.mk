# The local Kubernetes control plane (test/cluster/). Included by the root Makefile.
# Binaries land in test/cluster/.build/bin and are rebuilt only when go.mod, go.sum or our own
# Go sources change, so a second `make cluster-up` starts in seconds.

CLUSTER_DIR := test/cluster
CLUSTER_BIN := $(CLUSTER_DIR)/.build/bin
KUBE_VERSION := v1.37.2
# Stamped into both version packages so `kubectl version` and Helm see a real server version.
KUBE_LDFLAGS := -s -w \
  $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version, \
    -X $(p).gitVersion=$(KUBE_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=37 \
    -X $(p).gitTreeState=clean -X $(p).buildDate=2026-01-01T00:00:00Z)
CLUSTER_GO := cd $(CLUSTER_DIR) && CGO_ENABLED=0 nice -n 10 go build -trimpath -buildvcs=false
CLUSTER_MOD := $(CLUSTER_DIR)/go.mod $(CLUSTER_DIR)/go.sum
CLUSTER_SRC := $(shell find $(CLUSTER_DIR)/cmd $(CLUSTER_DIR)/internal -name '*.go' 2>/dev/null)
CLUSTER_KUBE := kube-apiserver kube-controller-manager kube-scheduler kubectl
CLUSTER_OURS := etcd node-agent localcluster
CLUSTER_BINS := $(addprefix $(CLUSTER_BIN)/,$(CLUSTER_KUBE) $(CLUSTER_OURS) helm)

.PHONY: cluster-build cluster-go cluster-up cluster-down cluster-test

## cluster-build: build etcd, the Kubernetes control plane, kubectl, helm and the node agent
cluster-build: cluster-go $(CLUSTER_BINS)

# The first build takes about half an hour on two cores; say why it cannot start instead.
cluster-go:
	@command -v go >/dev/null || { echo "cluster-build: needs Go >= 1.26 on PATH (go.mod: go 1.26.0)" >&2; exit 1; }

$(addprefix $(CLUSTER_BIN)/,$(CLUSTER_KUBE)): $(CLUSTER_BIN)/%: $(CLUSTER_MOD)
	$(CLUSTER_GO) -ldflags '$(KUBE_LDFLAGS)' -o .build/bin/$* k8s.io/kubernetes/cmd/$*

$(addprefix $(CLUSTER_BIN)/,$(CLUSTER_OURS)): $(CLUSTER_BIN)/%: $(CLUSTER_MOD) $(CLUSTER_SRC)
	$(CLUSTER_GO) -ldflags '-s -w' -o .build/bin/$* ./cmd/$*

$(CLUSTER_BIN)/helm: $(CLUSTER_MOD)
	$(CLUSTER_GO) -ldflags '-s -w -X helm.sh/helm/v4/internal/version.version=v4.3.2' \
	  -o .build/bin/helm helm.sh/helm/v4/cmd/helm

## cluster-up: start etcd, the API server, scheduler, controller manager and one node per site
cluster-up: cluster-build
	$(CLUSTER_BIN)/localcluster up

## cluster-down: stop every process cluster-up started (pods included)
cluster-down:
	@if [ -x $(CLUSTER_BIN)/localcluster ]; then $(CLUSTER_BIN)/localcluster down; fi

## cluster-test: the node agent's Go unit tests (the e2e tests are in test/e2e/, run by make test)
cluster-test:
	cd $(CLUSTER_DIR) && CGO_ENABLED=0 nice -n 10 go test ./internal/...
