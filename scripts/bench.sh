#!/usr/bin/env bash
# Parley against RabbitMQ on this machine, side by side, in one run (`make bench`; never part of
# `make test`). It starts a private RabbitMQ and a private Parley on free loopback ports with their
# data in a temp dir, runs every scenario against each broker interleaved (A B A B ...) so drift in
# the machine's load hits both alike, repeats each -r times, and prints per scenario the median
# msgs/s with min-max, p99 latency, lost/duplicated messages and the Parley/RabbitMQ ratio.
# Everything it started is stopped on exit, whatever the exit path.
#
# usage: scripts/bench.sh [-r REPEATS] [-d DURATION] [-s SCENARIO_REGEX] [-o SUMMARY.md]
#                         [-u RABBITMQ_URL] [-p PARLEY_URL] [-P]
#   -r N     runs per scenario and broker (default 3)
#   -d DUR   publishing time per run, Go duration (default 10s)
#   -s RE    only scenarios whose name matches RE (grep -E)
#   -o FILE  also write the summary table (markdown) to FILE
#   -u URL   use this RabbitMQ instead of starting one (e.g. amqp://guest:guest@127.0.0.1:5673/)
#   -p URL   use this Parley instead of building and starting one
#   -P       RabbitMQ only: do not start Parley
# Raw per-run JSON (parley-bench -json) is kept in the results directory printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=3
duration=10s
filter=.
summary_out=
rmq_url=
parley_url=
no_parley=0
while getopts "r:d:s:o:u:p:Ph" opt; do
  case "$opt" in
    r) repeats=$OPTARG ;;
    d) duration=$OPTARG ;;
    s) filter=$OPTARG ;;
    o) summary_out=$OPTARG ;;
    u) rmq_url=$OPTARG ;;
    p) parley_url=$OPTARG ;;
    P) no_parley=1 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

# ---- prerequisites ---------------------------------------------------------------------------
need_pkgs=()
command -v jq >/dev/null || need_pkgs+=(jq)
if [ -z "$rmq_url" ] && ! command -v rabbitmq-server >/dev/null; then need_pkgs+=(rabbitmq-server); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need_pkgs[*]}: run as root to apt-get install them, or install them yourself"
  log "installing ${need_pkgs[*]} from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  # The Debian package may start a system-wide node on 5672; ours is private and does not need it.
fi

tmp=$(mktemp -d /tmp/parley-bench.XXXXXX)
results=$(mktemp -d /tmp/parley-bench-results.XXXXXX)
rmq_pid_file=
parley_pid=

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { # a random unprivileged port nobody listens on
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    port_in_use "$p" || { echo "$p"; return 0; }
  done
  die "no free port found"
}
wait_port() { # port timeout_seconds pid: waits for a listener while pid lives
  local deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    port_in_use "$1" && return 0
    [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && return 1
    sleep 0.5
  done
  return 1
}

# Both brokers get the same file limit: 65536 where allowed, else as high as the hard limit goes.
raise_nofile() { ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; }

stop_pid() { # pid: TERM, then KILL after 20s
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  if [ -n "$parley_pid" ]; then log "stopping parley"; stop_pid "$parley_pid"; fi
  if [ -n "$rmq_pid_file" ] && [ -s "$rmq_pid_file" ]; then
    log "stopping rabbitmq"; stop_pid "$(cat "$rmq_pid_file")"
  fi
  [ -n "${rmq_launcher:-}" ] && stop_pid "$rmq_launcher"
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build -----------------------------------------------------------------------------------
log "building parley-bench"
go build -o "$tmp/parley-bench" ./cmd/parley-bench

# ---- RabbitMQ --------------------------------------------------------------------------------
rmq_version=n/a
if [ -z "$rmq_url" ]; then
  rdir=$tmp/rabbitmq
  mkdir -p "$rdir/mnesia" "$rdir/log"
  echo '[].' >"$rdir/enabled_plugins"
  : >"$rdir/rabbitmq.conf"
  amqp_port=$(free_port)
  dist_port=$(free_port)
  rmq_pid_file=$rdir/beam.pid
  if [ "$(id -u)" = 0 ]; then
    # As root, rabbitmq-server re-executes itself as the rabbitmq user, which must own its files.
    chown -R rabbitmq:rabbitmq "$rdir"
    chmod 755 "$tmp"
  fi
  log "starting rabbitmq on 127.0.0.1:$amqp_port (data in $rdir)"
  (
    raise_nofile
    export RABBITMQ_NODENAME=bench-$$@localhost
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$amqp_port
    export RABBITMQ_DIST_PORT=$dist_port
    export RABBITMQ_MNESIA_BASE=$rdir/mnesia
    export RABBITMQ_LOG_BASE=$rdir/log
    export RABBITMQ_FEATURE_FLAGS_FILE=$rdir/feature_flags
    export RABBITMQ_CONFIG_FILE=$rdir/rabbitmq
    export RABBITMQ_ENABLED_PLUGINS_FILE=$rdir/enabled_plugins
    export RABBITMQ_PID_FILE=$rmq_pid_file
    export HOME=$rdir
    exec rabbitmq-server
  ) >"$rdir/out.log" 2>&1 &
  rmq_launcher=$!
  wait_port "$amqp_port" 120 "$rmq_launcher" ||
    die "rabbitmq did not start; last lines of its output:$(echo; tail -20 "$rdir/out.log")"
  rmq_url=amqp://guest:guest@127.0.0.1:$amqp_port/
  rmq_version=$(grep -ohE 'RabbitMQ [0-9]+\.[0-9]+\.[0-9]+' "$rdir/out.log" "$rdir/log/"*.log 2>/dev/null | head -1 | cut -d' ' -f2)
fi
[ "$rmq_version" = n/a ] && rmq_version=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo unknown)

# ---- Parley ----------------------------------------------------------------------------------
if [ "$no_parley" = 0 ] && [ -z "$parley_url" ]; then
  pdir=$tmp/parley
  mkdir -p "$pdir"
  # Others may be mid-edit in this working tree: if it does not build, fall back to the last
  # commit (exported with git archive, so the repository itself is left alone).
  parley_src="working tree at $(git rev-parse --short HEAD)"
  [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && parley_src+=" with uncommitted changes"
  if ! go build -o "$tmp/bin/parley" ./cmd/parley 2>"$pdir/build.log"; then
    log "parley does not build from the working tree; trying HEAD ($(git rev-parse --short HEAD))"
    mkdir -p "$tmp/src"
    git archive HEAD | tar -x -C "$tmp/src"
    if (cd "$tmp/src" && go build -o "$tmp/bin/parley" ./cmd/parley) 2>>"$pdir/build.log"; then
      parley_src="commit $(git rev-parse --short HEAD)"
    else
      rm -f "$tmp/bin/parley"
    fi
  fi
  if [ -x "$tmp/bin/parley" ]; then
    pport=$(free_port)
    log "starting parley on 127.0.0.1:$pport"
    (
      raise_nofile
      exec "$tmp/bin/parley" --data-dir "$pdir/data" --amqp "127.0.0.1:$pport" --amqps off --mqtt off --mqtts off \
        --stomp off --stomps off --http off --ws-stomp off --ws-mqtt off --ws off --prometheus off --cluster off \
        --log-level warn
    ) >"$pdir/out.log" 2>&1 &
    parley_pid=$!
    if wait_port "$pport" 30 "$parley_pid"; then
      parley_url=amqp://guest:guest@127.0.0.1:$pport/
    else
      log "parley did not start; last lines of its output:"; tail -20 "$pdir/out.log" >&2
      stop_pid "$parley_pid"; parley_pid=
    fi
  else
    log "parley does not build:"; tail -20 "$pdir/build.log" >&2
  fi
fi
[ -n "$parley_url" ] || log "parley: n/a"

# ---- scenarios -------------------------------------------------------------------------------
# name | brokers (both or rabbitmq) | parley-bench arguments (after "amqp"), or n/a for modes
# parley-bench does not have yet.
scenarios=(
  "amqp-1p1c-transient-autoack|both|-producers 1 -consumers 1 -size 1024 -autoack"
  "amqp-1p1c-persistent-confirm-ack|both|-producers 1 -consumers 1 -size 1024 -persistent -durable -confirm 256 -prefetch 256"
  "amqp-1p1c-quorum-confirm-ack|rabbitmq|-producers 1 -consumers 1 -size 1024 -persistent -queue-type quorum -confirm 256 -prefetch 256"
  "amqp-fanout-1to4-autoack|both|-producers 1 -consumers 4 -fanout 4 -size 1024 -autoack"
  "amqp-4p4c-transient-autoack|both|-producers 4 -consumers 4 -queues 1 -size 1024 -autoack"
  "amqp-1p1c-latency-2k-per-s|both|-producers 1 -consumers 1 -size 1024 -rate 2000 -prefetch 256"
  "amqp-1p1c-persistent-latency-2k-per-s|both|-producers 1 -consumers 1 -size 1024 -rate 2000 -persistent -durable -confirm 256 -prefetch 256"
  "mqtt-qos1-1p1c|n/a|"
  "stomp-1p1c|n/a|"
  "idle-connections|n/a|"
)

brokers=(rabbitmq)
[ -n "$parley_url" ] && brokers+=(parley)
url_of() { if [ "$1" = parley ]; then echo "$parley_url"; else echo "$rmq_url"; fi; }

# One line per run: scenario broker rep in out p99_us lost dup redelivered status p50_us
runs=$results/runs.tsv
: >"$runs"
for entry in "${scenarios[@]}"; do
  IFS='|' read -r name which args <<<"$entry"
  echo "$name" | grep -qE -- "$filter" || continue
  [ "$which" = n/a ] && { log "$name: n/a (not implemented yet)"; continue; }
  for rep in $(seq "$repeats"); do
    for b in "${brokers[@]}"; do
      [ "$which" = rabbitmq ] && [ "$b" != rabbitmq ] && continue
      out=$results/$name.$b.$rep.json
      log "$name  $b  run $rep/$repeats"
      # shellcheck disable=SC2086 # args is a list of flags by design
      if "$tmp/parley-bench" amqp -url "$(url_of "$b")" -label "$b" -duration "$duration" -json $args \
        >"$out" 2>"$results/$name.$b.$rep.log"; then status=ok; else status=failed; fi
      if [ -s "$out" ] && jq -e . "$out" >/dev/null 2>&1; then
        [ "$(jq -r '.timed_out' "$out")" = true ] && status=timeout
        jq -r --arg n "$name" --arg b "$b" --arg r "$rep" --arg s "$status" \
          '[$n, $b, $r, .in_msgs_per_sec, .out_msgs_per_sec, .latency_us.p99, .accounting.lost,
            .accounting.duplicates, .accounting.redelivered, $s, .latency_us.p50] | @tsv' "$out" >>"$runs"
      else
        printf '%s\t%s\t%s\t0\t0\t0\t0\t0\t0\tfailed\t0\n' "$name" "$b" "$rep" >>"$runs"
        log "$name $b run $rep failed:"; tail -5 "$results/$name.$b.$rep.log" >&2
      fi
    done
  done
done

# ---- summary ---------------------------------------------------------------------------------
# median and min-max of column $2 over the runs of one scenario and broker (stdin: values)
stats() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit}
  m = (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%.0f %.0f %.0f\n", m, v[1], v[NR]}'; }
col() { awk -F'\t' -v n="$1" -v b="$2" -v c="$3" '$1==n && $2==b && $10!="failed" {print $c}' "$runs"; }

ms() { if [ "${1:--}" = - ]; then echo -; else awk -v v="$1" 'BEGIN {printf "%.1f", v/1000}'; fi; }
ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN {if (a != "-" && b != "-" && b+0 > 0) printf "%.2f×", a/b; else print "n/a"}'; }

summary=$results/summary.md
{
  echo "| scenario | broker | out msg/s median (min–max) | in msg/s median | p50 / p99 latency ms (medians) | lost / dup (all runs) | runs ok | Parley / RabbitMQ out msg/s | Parley / RabbitMQ p99 |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for entry in "${scenarios[@]}"; do
    IFS='|' read -r name which _ <<<"$entry"
    echo "$name" | grep -qE -- "$filter" || continue
    if [ "$which" = n/a ]; then echo "| $name | both | n/a | n/a | n/a | n/a | 0 | n/a | n/a |"; continue; fi
    rmq_median=
    for b in rabbitmq parley; do
      if [ "$b" = parley ] && { [ "$which" = rabbitmq ] || [ -z "$parley_url" ]; }; then
        reason="n/a"; [ "$which" = rabbitmq ] && reason="n/a (RabbitMQ only)"
        echo "| $name | parley | $reason | | | | | n/a | n/a |"; continue
      fi
      read -r omed omin omax <<<"$(col "$name" "$b" 5 | stats) "
      read -r imed _ _ <<<"$(col "$name" "$b" 4 | stats) "
      read -r p99 _ _ <<<"$(col "$name" "$b" 6 | stats) "
      read -r p50 _ _ <<<"$(col "$name" "$b" 11 | stats) "
      lost=$(awk -F'\t' -v n="$name" -v b="$b" '$1==n && $2==b {s+=$7} END {print s+0}' "$runs")
      dup=$(awk -F'\t' -v n="$name" -v b="$b" '$1==n && $2==b {s+=$8} END {print s+0}' "$runs")
      ok=$(awk -F'\t' -v n="$name" -v b="$b" '$1==n && $2==b && $10=="ok" {c++} END {print c+0}' "$runs")
      total=$(awk -F'\t' -v n="$name" -v b="$b" '$1==n && $2==b {c++} END {print c+0}' "$runs")
      p99ms="$(ms "${p50:-}") / $(ms "${p99:-}")"
      ratio= lratio=
      if [ "$b" = rabbitmq ]; then rmq_median=${omed:-} rmq_p99=${p99:-}; else
        # Throughput: above 1 means Parley is faster. Latency: below 1 means Parley is faster.
        ratio=$(ratio_of "${omed:--}" "${rmq_median:--}")
        lratio=$(ratio_of "${p99:--}" "${rmq_p99:--}")
      fi
      echo "| $name | $b | ${omed:--} (${omin:--}–${omax:--}) | ${imed:--} | $p99ms | $lost / $dup | $ok/$total | $ratio | $lratio |"
    done
  done
} >"$summary"

echo
echo "machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(go version | cut -d' ' -f3), RabbitMQ $rmq_version, load average $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "$parley_url" ] && echo "parley: ${parley_src:-$parley_url}"
echo "runs: $repeats × $duration per scenario and broker, interleaved; raw results in $results"
echo
cat "$summary"
[ -n "$summary_out" ] && cp "$summary" "$summary_out"
exit 0
