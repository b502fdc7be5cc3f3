#!/usr/bin/env bash
# Profiles of Parley under one bench scenario (`make profile SCENARIO=...`; never part of
# `make test`). It builds and starts a private Parley with --pprof on a free loopback port (which
# also turns on block and mutex sampling), runs the scenario's parley-bench workload from
# scripts/bench-scenarios.txt against it, and meanwhile takes a CPU profile of the steady part
# of the run; at the end it takes the allocation, block (where goroutines waited), mutex
# (contention) and goroutine profiles. Everything goes into a directory it prints, with a
# `go tool pprof -top` summary of each next to the profile. Everything it started is stopped.
#
# usage: scripts/profile.sh [-d DURATION] [-o DIR] SCENARIO
#   SCENARIO  a scenario name from scripts/bench-scenarios.txt that Parley runs
#             (default amqp-4p4c-persistent-confirm-ack)
#   -d DUR    publishing time, Go duration (default 20s); the CPU profile covers it minus 4s
#   -o DIR    write the profiles here (default: a new /tmp/parley-profile.* directory)
# Look deeper with e.g. `go tool pprof -http 127.0.0.1:8080 DIR/parley DIR/cpu.pb.gz`.
set -euo pipefail
cd "$(dirname "$0")/.."
log_prefix=profile
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

duration=20s
outdir=
while getopts "d:o:h" opt; do
  case "$opt" in
    d) duration=$OPTARG ;;
    o) outdir=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
scenario=${1:-amqp-4p4c-persistent-confirm-ack}

line=$(scenario_lines "^${scenario}\$")
[ -n "$line" ] || die "no scenario named '$scenario' in scripts/bench-scenarios.txt"
IFS='|' read -r _ brokers mode args parley_args <<<"$line"
[[ " $brokers " == *" parley "* ]] || die "scenario $scenario does not run against Parley"
[ -n "$parley_args" ] && args=$parley_args
case "$mode" in idle-*) die "idle scenarios hold connections and publish nothing; profile a message scenario" ;; esac
secs=$(awk -v d="$duration" 'BEGIN {
  n = d + 0; if (d ~ /ms$/) n /= 1000; else if (d ~ /m$/) n *= 60; printf "%d", n }')
[ "$secs" -ge 6 ] || die "-d $duration: need at least 6s to profile the steady part of the run"

tmp=$(mktemp -d /tmp/parley-profile-run.XXXXXX)
[ -n "$outdir" ] || outdir=$(mktemp -d "/tmp/parley-profile.$scenario.XXXXXX")
mkdir -p "$outdir"
stop_on_exit
raise_nofile

log "building parley and parley-bench"
build_parley || die "parley does not build"
go build -o "$tmp/parley-bench" ./cmd/parley-bench
cp "$tmp/bin/parley" "$outdir/parley" # pprof needs the very binary for symbols
pport=$(free_port)
start_parley --pprof "127.0.0.1:$pport" || die "parley did not start"
base=http://127.0.0.1:$pport/debug/pprof

case "$mode" in
  amqp) url=amqp://guest:guest@$parley_amqp/ ;;
  mqtt) url=${parley_mqtt:+tcp://$parley_mqtt} ;;
  stomp) url=${parley_stomp:+stomp://guest:guest@$parley_stomp/} ;;
  stomp-ws) url=${parley_ws_stomp:+ws://$parley_ws_stomp/ws} ;;
esac
[ -n "${url:-}" ] || die "this Parley does not serve $mode yet"

log "running $scenario for $duration: parley-bench ${mode%-ws} $args"
# shellcheck disable=SC2086 # args is a list of flags by design
"$tmp/parley-bench" "${mode%-ws}" -url "$url" -label parley -duration "$duration" -progress 5s $args \
  </dev/null >"$outdir/bench.txt" 2>"$outdir/bench.log" &
bench_pid=$!
# Skip the first 2 s (connections, warm-up) and stop 2 s before publishing ends.
sleep 2
cpu_secs=$((secs - 4))
log "cpu profile for ${cpu_secs}s"
curl -sf -o "$outdir/cpu.pb.gz" "$base/profile?seconds=$cpu_secs" || log "cpu profile failed"
for p in allocs block mutex goroutine heap; do
  curl -sf -o "$outdir/$p.pb.gz" "$base/$p" || log "$p profile failed"
done
wait "$bench_pid" || log "parley-bench exited with $?"
bench_pid=

for p in cpu allocs block mutex; do
  [ -s "$outdir/$p.pb.gz" ] || continue
  extra=()
  [ "$p" = allocs ] && extra=(-sample_index=alloc_space)
  go tool pprof -top -nodecount=30 "${extra[@]}" "$outdir/parley" "$outdir/$p.pb.gz" >"$outdir/$p.top.txt" 2>/dev/null || true
  go tool pprof -top -cum -nodecount=30 "${extra[@]}" "$outdir/parley" "$outdir/$p.pb.gz" >"$outdir/$p.topcum.txt" 2>/dev/null || true
done

echo "scenario: $scenario ($mode $args), $duration; parley: $parley_src; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
cat "$outdir/bench.txt"
for p in cpu allocs block mutex; do
  [ -s "$outdir/$p.top.txt" ] || continue
  echo
  echo "== $p (go tool pprof -top; -cum in $p.topcum.txt)"
  sed -n '1,40p' "$outdir/$p.top.txt"
done
echo
echo "profiles in $outdir"
