# gocqrs developer tasks. Run `make help` for the list.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

GO ?= go
GOLANGCI_LINT_VERSION := v2.15.0
BIN := $(CURDIR)/.bin
GOLANGCI_LINT := $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
# Nested modules (each with its own go.mod) tested and linted besides the root.
# Each is tested, linted and tidied on its own go.mod (GOWORK=off); go.work
# only serves `go run ./examples/shop` from the root.
MODGO := GOWORK=off $(GO)
MODULES := . $(patsubst %/go.mod,%,$(shell find . -mindepth 2 -name go.mod -not -path './.bin/*'))

.PHONY: help test lint cover bench bench-smoke tidy-check example

help: ## Show this help.
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

test: ## Run every test of every module with the race detector, in shuffled order.
	@for m in $(MODULES); do (cd $$m && $(MODGO) test -race -shuffle=on ./...); done

example: ## Run the distributed shop example (SQLite and an embedded NATS server, nothing to install).
	$(GO) run ./examples/shop

$(GOLANGCI_LINT):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	@mv $(BIN)/golangci-lint $(GOLANGCI_LINT)

lint: $(GOLANGCI_LINT) ## go vet and golangci-lint (pinned version, fetched on first use).
	@for m in $(MODULES); do (cd $$m && $(MODGO) vet ./... && GOWORK=off $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml ./...); done

cover: ## Test with coverage; writes cover.out and prints the total.
	$(MODGO) test -race -coverpkg=./... -coverprofile=cover.out ./...
	$(MODGO) tool cover -func=cover.out | tail -n 1

bench: ## Run every benchmark of every module (-count 6); bench.txt is benchstat input.
	@rm -f bench.txt
	@for m in $(MODULES); do (cd $$m && $(MODGO) test -run '^$$' -bench . -benchmem -count 6 ./...) | tee -a bench.txt; done

bench-smoke: ## Run every benchmark once, so they keep compiling and running.
	@for m in $(MODULES); do (cd $$m && $(MODGO) test -run '^$$' -bench . -benchtime=1x ./... >/dev/null); done

tidy-check: ## Fail if go.mod or go.sum is not tidy.
	@for m in $(MODULES); do (cd $$m && $(MODGO) mod tidy -diff); done
