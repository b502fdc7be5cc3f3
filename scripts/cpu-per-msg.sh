#!/usr/bin/env bash
# Load-independent cost of one bench scenario on a broker: starts a private Parley (or, with
# -b mosquitto, a private Mosquitto configured as scripts/bench.sh does), runs the scenario's
# parley-bench workload (amqp or mqtt mode) against it and prints, per message delivered to
# consumers, the broker's CPU time (user + system, from /proc/PID/stat), its read and write
# system calls (syscr/syscw from /proc/PID/io), the bytes it had written to disk (write_bytes
# from /proc/PID/io: the WAL, flushed memtables, compactions, snapshots) and its context
# switches (summed over its threads), and the load generator's own CPU time per message (user +
# system of the parley-bench process, from /usr/bin/time: both share the machine's cores).
# Unlike msg/s, these do not move much with the machine's load. Never part of `make test`.
# PARLEY_BENCH=path runs that parley-bench binary instead of building ./cmd/parley-bench (to
# compare two load generators against the same broker).
#
# usage: scripts/cpu-per-msg.sh [-d DURATION] [-r RUNS] [-b BROKER] SCENARIO
#   -d DUR     publishing time per run (default 8s)
#   -r N       runs, each against a fresh broker (default 1)
#   -b BROKER  parley (default) or mosquitto (mqtt scenarios only)
set -euo pipefail
cd "$(dirname "$0")/.."
log_prefix=cpu-per-msg
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

duration=8s
runs=1
broker=parley
while getopts "d:r:b:h" opt; do
  case "$opt" in
    d) duration=$OPTARG ;;
    r) runs=$OPTARG ;;
    b) broker=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
scenario=${1:?usage: scripts/cpu-per-msg.sh [-d DUR] [-r N] SCENARIO}
line=$(scenario_lines "^${scenario}\$")
[ -n "$line" ] || die "no scenario named '$scenario' in scripts/bench-scenarios.txt"
IFS='|' read -r _ _ mode args parley_args <<<"$line"
case "$broker:$mode" in
  parley:amqp | parley:mqtt | mosquitto:mqtt) ;;
  *) die "$broker cannot run $mode scenarios here (parley: amqp and mqtt; mosquitto: mqtt)" ;;
esac
[ "$broker" = parley ] && [ -n "$parley_args" ] && args=$parley_args

tmp=$(mktemp -d /tmp/parley-cpumsg.XXXXXX)
stop_on_exit
raise_nofile
[ "$broker" = parley ] && { build_parley || die "parley does not build"; }
if [ -n "${PARLEY_BENCH:-}" ]; then
  cp "$PARLEY_BENCH" "$tmp/parley-bench"
else
  go build -o "$tmp/parley-bench" ./cmd/parley-bench
fi

# ticks syscr syscw write_bytes ctxsw of pid
sample() {
  local t io ctx
  t=$(awk '{print $14 + $15}' "/proc/$1/stat")
  io=$(awk '/^syscr/ {r=$2} /^syscw/ {w=$2} /^write_bytes/ {b=$2} END {print r, w, b}' "/proc/$1/io")
  ctx=$(cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}')
  echo "$t $io $ctx"
}
hz=$(getconf CLK_TCK)
# start_mosquitto: a private Mosquitto on a free port, configured as scripts/bench.sh does
# (max_queued_messages 0: it keeps every QoS 1 message, as Parley does). Sets mosq_pid and
# broker_addr.
mosq_pid=
start_mosquitto() {
  local port bin
  bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  [ -x "$bin" ] || die "mosquitto is not installed (scripts/bench.sh installs it)"
  port=$(free_port)
  mkdir -p "$tmp/mosquitto"
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n' \
    "$port" >"$tmp/mosquitto/mosquitto.conf"
  chmod 755 "$tmp" "$tmp/mosquitto"
  ( raise_nofile; exec "$bin" -c "$tmp/mosquitto/mosquitto.conf" ) >"$tmp/mosquitto/out.log" 2>&1 &
  mosq_pid=$!
  wait_port "$port" 20 "$mosq_pid" || die "mosquitto did not start"
  broker_addr=127.0.0.1:$port
}

echo "broker $broker, scenario $scenario ($args), $duration; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-4s %9s %10s %9s %10s %11s %10s %10s %12s %10s %14s\n' run in_msg/s out_msg/s consumed p99_ms cpu_us/msg reads/msg writes/msg disk_KiB/msg ctxsw/msg client_us/msg
for i in $(seq 1 "$runs"); do
  if [ "$broker" = mosquitto ]; then
    start_mosquitto
    pid=$mosq_pid url=tcp://$broker_addr
  else
    rm -rf "$tmp/parley"; mkdir -p "$tmp/parley"
    start_parley >/dev/null 2>&1 || die "parley did not start"
    pid=$parley_pid
    if [ "$mode" = amqp ]; then url="amqp://guest:guest@$parley_amqp/"; else url="tcp://$parley_mqtt"; fi
  fi
  read -r t0 r0 w0 b0 c0 < <(sample "$pid")
  # shellcheck disable=SC2086 # args is a list of flags by design
  out=$(/usr/bin/time -f '%U %S' -o "$tmp/client-time" "$tmp/parley-bench" "$mode" -url "$url" -label "$broker" -duration "$duration" -json $args 2>/dev/null)
  read -r t1 r1 w1 b1 c1 < <(sample "$pid")
  read -r cu cs < <(tail -1 "$tmp/client-time")
  stop_pid "$pid"; parley_pid= mosq_pid=
  read -r consumed inrate rate p99 < <(python3 -c 'import json,sys; r=json.load(sys.stdin); r=r[0] if isinstance(r, list) else r; print(r["consumed"], r["in_msgs_per_sec"], r["out_msgs_per_sec"], r["latency_us"]["p99"])' <<<"$out")
  awk -v n="$consumed" -v dt=$((t1 - t0)) -v hz="$hz" -v dr=$((r1 - r0)) -v dw=$((w1 - w0)) -v db=$((b1 - b0)) -v dc=$((c1 - c0)) -v i="$i" -v inrate="$inrate" -v rate="$rate" -v p99="$p99" -v cu="$cu" -v cs="$cs" \
    'BEGIN { printf "%-4s %9.0f %10.0f %9d %10.1f %11.2f %10.3f %10.3f %12.3f %10.3f %14.2f\n", i, inrate, rate, n, p99 / 1000, dt / hz * 1e6 / n, dr / n, dw / n, db / n / 1024, dc / n, (cu + cs) * 1e6 / n }'
done
