#!/usr/bin/env bash
# Load-independent cost of one bench scenario on Parley: starts a private Parley, runs the
# scenario's parley-bench workload against it and prints, per message delivered to consumers,
# Parley's CPU time (user + system, from /proc/PID/stat), its read and write system calls
# (syscr/syscw from /proc/PID/io), the bytes it had written to disk (write_bytes from
# /proc/PID/io: the WAL, flushed memtables, compactions, snapshots) and its context switches
# (summed over its threads). Unlike msg/s, these do not move much with the machine's load.
# Never part of `make test`.
#
# usage: scripts/cpu-per-msg.sh [-d DURATION] [-r RUNS] SCENARIO
#   -d DUR   publishing time per run (default 8s)
#   -r N     runs, each against a fresh Parley (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
log_prefix=cpu-per-msg
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

duration=8s
runs=1
while getopts "d:r:h" opt; do
  case "$opt" in
    d) duration=$OPTARG ;;
    r) runs=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
scenario=${1:?usage: scripts/cpu-per-msg.sh [-d DUR] [-r N] SCENARIO}
line=$(scenario_lines "^${scenario}\$")
[ -n "$line" ] || die "no scenario named '$scenario' in scripts/bench-scenarios.txt"
IFS='|' read -r _ _ mode args parley_args <<<"$line"
[ "$mode" = amqp ] || die "only amqp scenarios"
[ -n "$parley_args" ] && args=$parley_args

tmp=$(mktemp -d /tmp/parley-cpumsg.XXXXXX)
parley_pid=
cleanup() {
  local rc=$?
  [ -n "$parley_pid" ] && stop_pid "$parley_pid"
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
raise_nofile
build_parley || die "parley does not build"
go build -o "$tmp/parley-bench" ./cmd/parley-bench

# ticks syscr syscw write_bytes ctxsw of pid
sample() {
  local t io ctx
  t=$(awk '{print $14 + $15}' "/proc/$1/stat")
  io=$(awk '/^syscr/ {r=$2} /^syscw/ {w=$2} /^write_bytes/ {b=$2} END {print r, w, b}' "/proc/$1/io")
  ctx=$(cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}')
  echo "$t $io $ctx"
}
hz=$(getconf CLK_TCK)
echo "scenario $scenario ($args), $duration; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-4s %10s %9s %10s %11s %10s %10s %12s %10s\n' run out_msg/s consumed p99_ms cpu_us/msg reads/msg writes/msg disk_KiB/msg ctxsw/msg
for i in $(seq 1 "$runs"); do
  rm -rf "$tmp/parley"; mkdir -p "$tmp/parley"
  start_parley >/dev/null 2>&1 || die "parley did not start"
  read -r t0 r0 w0 b0 c0 < <(sample "$parley_pid")
  # shellcheck disable=SC2086 # args is a list of flags by design
  out=$("$tmp/parley-bench" amqp -url "amqp://guest:guest@$parley_amqp/" -label parley -duration "$duration" -json $args 2>/dev/null)
  read -r t1 r1 w1 b1 c1 < <(sample "$parley_pid")
  stop_pid "$parley_pid"; parley_pid=
  read -r consumed rate p99 < <(python3 -c 'import json,sys; r=json.load(sys.stdin); r=r[0] if isinstance(r, list) else r; print(r["consumed"], r["out_msgs_per_sec"], r["latency_us"]["p99"])' <<<"$out")
  awk -v n="$consumed" -v dt=$((t1 - t0)) -v hz="$hz" -v dr=$((r1 - r0)) -v dw=$((w1 - w0)) -v db=$((b1 - b0)) -v dc=$((c1 - c0)) -v i="$i" -v rate="$rate" -v p99="$p99" \
    'BEGIN { printf "%-4s %10.0f %9d %10.1f %11.2f %10.3f %10.3f %12.3f %10.3f\n", i, rate, n, p99 / 1000, dt / hz * 1e6 / n, dr / n, dw / n, db / n / 1024, dc / n }'
done
