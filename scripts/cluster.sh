#!/usr/bin/env bash
# Runs the three-node development cluster (configs/cluster/node{1,2,3}.yaml) on loopback in the
# foreground; Ctrl-C stops all three. Logs go to data/cluster/nodeN.log; data stays in
# data/cluster/ between runs (make clean removes it).
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/parley ./cmd/parley
go build -o bin/parleyctl ./cmd/parleyctl
mkdir -p data/cluster
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait
}
trap stop INT TERM EXIT
for i in 1 2 3; do
  bin/parley --config "configs/cluster/node$i.yaml" >"data/cluster/node$i.log" 2>&1 &
  pids+=($!)
done
echo "three nodes started: AMQP 127.0.0.1:5672-5674, MQTT 1883-1885, STOMP 61613-61615, HTTP 15672-15674"
echo "logs in data/cluster/node{1,2,3}.log; status: bin/parleyctl --http 127.0.0.1:15672 cluster status"
sleep 3
bin/parleyctl --http 127.0.0.1:15672 cluster status || true
wait
