# Parley. The two commands a user needs: `make run` and `make test`.
GO       ?= go
FUZZTIME ?= 10s
PKGS     := ./...

.PHONY: build run cluster test test-deps test-long lint fuzz gen bench bench-cluster profile clean

build:
	$(GO) build -o bin/parley ./cmd/parley
	$(GO) build -o bin/parleyctl ./cmd/parleyctl
	$(GO) build -o bin/parley-bench ./cmd/parley-bench

# One node, no config file, data in ./data, every protocol on its standard port.
run:
	$(GO) run ./cmd/parley

# A three-node development cluster on loopback (configs/cluster/), in the foreground; Ctrl-C stops it.
cluster:
	bash scripts/cluster.sh

# Installs what the tests need (apt-get, npm ci), checks the code (make lint), then runs every
# test, fuzz seed corpora included.
test: test-deps lint
	$(GO) test -count=1 -timeout 25m $(PKGS)

test-deps:
	bash scripts/install-test-deps.sh

# Long runs (soak, large volumes, many fault rounds) scaled up from the short versions in `make test`.
test-long: test-deps
	PARLEY_TEST_LONG=1 $(GO) test -count=1 -timeout 80m $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)
	bash scripts/check-imports.sh

# A short run of every fuzz target (FUZZTIME each).
fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

gen:
	$(GO) generate $(PKGS)

# Parley against RabbitMQ and Mosquitto on this machine, side by side (docs/performance.md).
# Never part of `make test`. BENCH_ARGS passes options, e.g. BENCH_ARGS="-r 5 -s mqtt".
bench:
	bash scripts/bench.sh $(BENCH_ARGS)

# Three-node Parley against a three-node RabbitMQ cluster (quorum queues) on this machine,
# persistent messages with confirms (same as `make bench BENCH_ARGS=-C`).
bench-cluster:
	bash scripts/bench-cluster.sh $(BENCH_ARGS)

# CPU, allocation, block and mutex profiles of Parley under one bench scenario, e.g.
# `make profile SCENARIO=amqp-4p4c-persistent-confirm-ack`; prints where it wrote them.
SCENARIO ?= amqp-4p4c-persistent-confirm-ack
profile:
	bash scripts/profile.sh $(PROFILE_ARGS) $(SCENARIO)

clean:
	rm -rf bin data
