# hsdal developer and CI entry points. `make test` needs no running servers:
# integration tests start their own local cluster (internal/testcluster).
GO ?= go
# Where `make up` keeps the long-lived cluster and writes its DSNs.
CLUSTER_DIR ?= .cluster
CLUSTER_ENV ?= .cluster.env

.PHONY: test vet fmt fmt-check up down status bench

## test: vet, gofmt check, then every test (with the race detector) against real servers
test: vet fmt-check
	$(GO) test -race -count=1 -timeout 30m ./...

## vet: go vet on every package
vet:
	$(GO) vet ./...

## fmt: rewrite Go files with gofmt
fmt:
	gofmt -w .

## fmt-check: fail, listing the files, if any Go file is not gofmt-formatted
fmt-check:
	@files="$$(gofmt -l .)"; \
	if [ -n "$$files" ]; then echo "gofmt needed on:"; echo "$$files"; exit 1; fi

## up: start a long-lived local cluster (primary, 2 standbys, Redis); DSNs go to $(CLUSTER_ENV)
up:
	$(GO) run ./cmd/hsdal-cluster -dir $(CLUSTER_DIR) -env $(CLUSTER_ENV) up

## down: stop the cluster started by `make up` and remove $(CLUSTER_DIR)
down:
	$(GO) run ./cmd/hsdal-cluster -dir $(CLUSTER_DIR) -env $(CLUSTER_ENV) down

## status: show the state of the cluster started by `make up`
status:
	$(GO) run ./cmd/hsdal-cluster -dir $(CLUSTER_DIR) -env $(CLUSTER_ENV) status

## bench: run the benchmark harness
bench:
	$(GO) run ./bench
