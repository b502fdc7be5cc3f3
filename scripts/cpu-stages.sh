#!/usr/bin/env bash
# Where Parley's CPU goes, by stage of the message path, under one bench scenario (never part of
# `make test`). It starts a private Parley, runs the scenario's parley-bench workload against it,
# records Parley with `perf record -g` (kernel time included, which a Go CPU profile shows only
# as its system call's share) for the steady part of the run, attributes every sample to the
# first stage whose function is on its stack (the table in scripts/cpu-stages.py) and prints
# each stage's share and its µs per message delivered: the share of Parley's CPU time over the
# whole run (/proc/PID/stat) divided by the messages delivered, the figure of
# scripts/cpu-per-msg.sh. Needs perf (linux-perf) and root or perf_event_paranoid <= 1.
#
# usage: scripts/cpu-stages.sh [-d DURATION] [-o DIR] SCENARIO
#   -d DUR   publishing time (default 14s); perf records from 3 s in for DUR minus 6 s
#   -o DIR   keep perf.data, the binary and the outputs here (default: a temp dir, deleted)
set -euo pipefail
cd "$(dirname "$0")/.."
log_prefix=cpu-stages
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

duration=14s
outdir=
while getopts "d:o:h" opt; do
  case "$opt" in
    d) duration=$OPTARG ;;
    o) outdir=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
scenario=${1:?usage: scripts/cpu-stages.sh [-d DUR] [-o DIR] SCENARIO}
command -v perf >/dev/null || die "perf is not installed (apt-get install linux-perf)"
line=$(scenario_lines "^${scenario}\$")
[ -n "$line" ] || die "no scenario named '$scenario' in scripts/bench-scenarios.txt"
IFS='|' read -r _ _ mode args parley_args <<<"$line"
[ "$mode" = amqp ] || die "only amqp scenarios"
[ -n "$parley_args" ] && args=$parley_args
secs=$(awk -v d="$duration" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; printf "%d", n }')
[ "$secs" -ge 8 ] || die "-d $duration: need at least 8s"

tmp=$(mktemp -d /tmp/parley-cpustages.XXXXXX)
out=${outdir:-$tmp/out}
mkdir -p "$out"
stop_on_exit
raise_nofile
build_parley || die "parley does not build"
go build -o "$tmp/parley-bench" ./cmd/parley-bench
if [ -n "$outdir" ]; then cp "$tmp/bin/parley" "$out/parley"; fi
mkdir -p "$tmp/parley"
start_parley >/dev/null 2>&1 || die "parley did not start"

echo "scenario $scenario ($args), $duration, $parley_src; load average $(cut -d' ' -f1-3 /proc/loadavg)"
ticks() { awk '{print $14 + $15}' "/proc/$parley_pid/stat"; }
t0=$(ticks)
# shellcheck disable=SC2086 # args is a list of flags by design
"$tmp/parley-bench" amqp -url "amqp://guest:guest@$parley_amqp/" -label parley -duration "$duration" \
  -json $args >"$out/bench.json" 2>"$out/bench.log" &
bench_pid=$!
sleep 3
perf record -F 999 -g -p "$parley_pid" -o "$out/perf.data" -- sleep $((secs - 6)) >/dev/null 2>"$out/perf.log"
wait "$bench_pid" || die "parley-bench failed (see $out/bench.log)"
bench_pid=
t1=$(ticks)
read -r n rate p99 < <(python3 -c 'import json,sys; r=json.load(sys.stdin); r=r[0] if isinstance(r, list) else r; print(r["consumed"], round(r["out_msgs_per_sec"]), round(r["latency_us"]["p99"] / 1000, 1))' <"$out/bench.json")
[ "$n" -gt 0 ] || die "no message delivered (see $out/bench.log)"
us=$(awk -v dt=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN { printf "%.2f", dt / hz * 1e6 / n }')
echo "$n messages delivered at $rate msg/s (p99 $p99 ms); Parley CPU $us µs a message; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| stage | share of Parley's CPU | µs a message |"
echo "|---|---|---|"
perf script -i "$out/perf.data" -F ip,sym 2>/dev/null | python3 scripts/cpu-stages.py "$us"
