#!/usr/bin/env bash
# Three-node Parley against a three-node RabbitMQ (quorum queues) on this machine, in one run:
# persistent messages, publisher confirms, manual acks (issue 7 item 7; `make bench-cluster`, or
# `make bench BENCH_ARGS=-C`; never part of `make test`). It installs what is missing
# (rabbitmq-server, jq) from Debian, starts three Parley nodes on loopback (one serves, the two
# others replicate every group and forward clients; see cmd/parley/cluster.go) and three RabbitMQ
# nodes on the same host (distinct RABBITMQ_NODENAME, ports and data dirs, one shared Erlang
# cookie, nodes 2 and 3 join_cluster node 1) with their data in a temp dir. If the RabbitMQ
# cluster cannot be formed it runs against a single RabbitMQ node and says so in the output.
# Runs are interleaved (rabbitmq parley rabbitmq parley ...) so drift in the machine's load
# hits both alike. Everything it started is stopped on exit.
#
# usage: scripts/bench-cluster.sh [-r REPEATS] [-d DURATION] [-o SUMMARY.md] [-1] [-s | -n]
#   -r N     runs per scenario and broker (default 3)
#   -d DUR   publishing time per run, Go duration (default 10s)
#   -o FILE  also write the summary table (markdown) to FILE
#   -1       a single RabbitMQ node instead of a three-node cluster
#   -s       Parley with cluster.spread_queues on (the default): each run's queue is placed on
#            the least-loaded node, so some runs' queues run on another node than the one the
#            load generator is connected to; the output says how many
#   -n       Parley with cluster.spread_queues off, written in its config file
# Clients connect to the node that serves (Parley) or to RabbitMQ node 1, where the benchmark
# declares the quorum queue, so its leader is local: neither side pays a forwarding hop.
set -euo pipefail
cd "$(dirname "$0")/.."
log_prefix=bench-cluster
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

repeats=3
duration=10s
summary_out=
single=0
spread=1
while getopts "r:d:o:1snh" opt; do
  case "$opt" in
    r) repeats=$OPTARG ;;
    d) duration=$OPTARG ;;
    o) summary_out=$OPTARG ;;
    1) single=1 ;;
    s) spread=1 ;;
    n) spread=0 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done

# name | parley-bench arguments for RabbitMQ | for Parley (its durable queue is its only kind,
# replicated through Raft like a quorum queue)
scenarios=(
  "cluster-amqp-1p1c-quorum-confirm-ack|-producers 1 -consumers 1 -size 1024 -persistent -queue-type quorum -confirm 256 -prefetch 256|-producers 1 -consumers 1 -size 1024 -persistent -durable -confirm 256 -prefetch 256"
  "cluster-amqp-4p4c-quorum-confirm-ack|-producers 4 -consumers 4 -size 1024 -persistent -queue-type quorum -confirm 64 -prefetch 256|-producers 4 -consumers 4 -size 1024 -persistent -durable -confirm 64 -prefetch 256"
)

# ---- prerequisites ---------------------------------------------------------------------------
need_pkgs=()
command -v jq >/dev/null || need_pkgs+=(jq)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v rabbitmq-server >/dev/null || need_pkgs+=(rabbitmq-server)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need_pkgs[*]}: run as root to apt-get install them, or install them yourself"
  log "installing ${need_pkgs[*]} from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

tmp=$(mktemp -d /tmp/parley-bench-cluster.XXXXXX)
results=$(mktemp -d /tmp/parley-bench-cluster-results.XXXXXX)
chmod 755 "$tmp"
parley_pids=()
rmq_launchers=()
rmq_pid_files=()
epmd_was_running=0
pgrep -x epmd >/dev/null && epmd_was_running=1

cleanup() {
  local rc=$?
  for p in "${parley_pids[@]}"; do stop_pid "$p"; done
  for f in "${rmq_pid_files[@]}"; do [ -s "$f" ] && stop_pid "$(cat "$f")"; done
  for p in "${rmq_launchers[@]}"; do stop_pid "$p"; done
  # epmd (Erlang's port mapper) is started by the first RabbitMQ node and outlives it: stop it
  # if this script started it.
  if [ "$epmd_was_running" = 0 ]; then
    for p in $(pgrep -x epmd); do stop_pid "$p"; done
  fi
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
raise_nofile

# ---- build -----------------------------------------------------------------------------------
log "building parley-bench and parley"
go build -o "$tmp/parley-bench" ./cmd/parley-bench
build_parley || die "parley does not build"

# ---- Parley: three nodes ---------------------------------------------------------------------
peers=
declare -a p_amqp p_http p_cluster
for i in 1 2 3; do
  p_amqp[i]=$(free_port) p_http[i]=$(free_port) p_cluster[i]=$(free_port)
  peers+="${peers:+,}$i=127.0.0.1:${p_cluster[i]}"
done
printf 'cluster:\n  spread_queues: false\n' >"$tmp/spread.yaml"
parley_extra=(--config "$tmp/spread.yaml" --log-level warn)
if [ "$spread" = 1 ]; then
  printf 'cluster:\n  spread_queues: true\n' >"$tmp/spread.yaml"
  # info: the standbys log each queue they host ("hosting queue"), counted at the end
  parley_extra=(--config "$tmp/spread.yaml" --log-level info)
fi
for i in 1 2 3; do
  mkdir -p "$tmp/parley-$i"
  (
    exec "$tmp/bin/parley" --data-dir "$tmp/parley-$i/data" --node-id "parley-$i" \
      --cluster "127.0.0.1:${p_cluster[i]}" --peers "$peers" --http "127.0.0.1:${p_http[i]}" \
      --amqp "127.0.0.1:${p_amqp[i]}" --amqps off --mqtt off --mqtts off --stomp off --stomps off \
      --ws-stomp off --ws-mqtt off --ws off --prometheus off "${parley_extra[@]}"
  ) >"$tmp/parley-$i/out.log" 2>&1 &
  parley_pids+=($!)
done
parley_url=
deadline=$((SECONDS + 60))
while [ -z "$parley_url" ] && [ $SECONDS -lt $deadline ]; do
  for i in 1 2 3; do
    if curl -fsS --max-time 2 "http://127.0.0.1:${p_http[i]}/api/cluster/status" 2>/dev/null | jq -e '.serving' >/dev/null 2>&1; then
      parley_url=amqp://guest:guest@127.0.0.1:${p_amqp[i]}/ parley_serving=$i
      break
    fi
  done
  sleep 0.5
done
[ -n "$parley_url" ] || { tail -20 "$tmp"/parley-*/out.log >&2; die "no Parley node serves within 60s"; }
log "parley: three nodes up, node $parley_serving serves (amqp ${p_amqp[*]})"

# ---- RabbitMQ: three nodes on one host -------------------------------------------------------
cookie=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)
declare -a r_amqp r_dist r_name r_dir
rmq_nodes=3
[ "$single" = 1 ] && rmq_nodes=1
as_rabbitmq=()
if [ "$(id -u)" = 0 ]; then
  # Debian's wrapper re-executes through su as root, whose PAM session resets the open-files
  # limit; setpriv switches to the rabbitmq user and keeps ours.
  as_rabbitmq=(setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups)
fi
rmq_bin=rabbitmq-server ctl_bin=rabbitmqctl
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && rmq_bin=/usr/lib/rabbitmq/bin/rabbitmq-server ctl_bin=/usr/lib/rabbitmq/bin/rabbitmqctl
start_rmq() { # index
  local i=$1 d=$tmp/rabbitmq-$1
  r_dir[i]=$d r_amqp[i]=$(free_port) r_dist[i]=$(free_port) r_name[i]=bench-$$-$i@localhost
  mkdir -p "$d/mnesia" "$d/log"
  echo '[].' >"$d/enabled_plugins"
  : >"$d/rabbitmq.conf"
  printf '%s' "$cookie" >"$d/.erlang.cookie"
  chmod 400 "$d/.erlang.cookie"
  [ "$(id -u)" = 0 ] && chown -R rabbitmq:rabbitmq "$d"
  rmq_pid_files+=("$d/beam.pid")
  (
    export RABBITMQ_NODENAME=${r_name[i]} RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=${r_amqp[i]} RABBITMQ_DIST_PORT=${r_dist[i]}
    export RABBITMQ_MNESIA_BASE=$d/mnesia RABBITMQ_LOG_BASE=$d/log
    export RABBITMQ_FEATURE_FLAGS_FILE=$d/feature_flags RABBITMQ_CONFIG_FILE=$d/rabbitmq
    export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins RABBITMQ_PID_FILE=$d/beam.pid
    export HOME=$d
    exec "${as_rabbitmq[@]}" "$rmq_bin"
  ) >"$d/out.log" 2>&1 &
  rmq_launchers+=($!)
  wait_port "${r_amqp[i]}" 120 "$!"
}
ctl() { # node-index args...: rabbitmqctl against that node, with the shared cookie
  local i=$1; shift
  HOME=${r_dir[i]} "${as_rabbitmq[@]}" env HOME="${r_dir[i]}" "$ctl_bin" -n "${r_name[i]}" "$@"
}
rmq_setup="single node"
for i in $(seq "$rmq_nodes"); do
  log "starting rabbitmq node $i"
  start_rmq "$i" || {
    tail -20 "${r_dir[i]}/out.log" >&2
    [ "$i" = 1 ] && die "rabbitmq node 1 did not start"
    log "rabbitmq node $i did not start: falling back to a single node"; rmq_nodes=1; break
  }
done
if [ "$rmq_nodes" = 3 ]; then
  joined=1
  for i in 2 3; do
    if ! { ctl "$i" stop_app && ctl "$i" join_cluster "${r_name[1]}" && ctl "$i" start_app; } >"${r_dir[i]}/join.log" 2>&1; then
      log "rabbitmq node $i could not join node 1:"; tail -5 "${r_dir[i]}/join.log" >&2
      joined=0
    fi
  done
  running=$(ctl 1 cluster_status --formatter json 2>/dev/null | jq -r '.running_nodes | length' 2>/dev/null || echo 0)
  if [ "$joined" = 1 ] && [ "$running" = 3 ]; then
    rmq_setup="three-node cluster (${r_name[1]}, ${r_name[2]}, ${r_name[3]})"
  else
    log "no three-node rabbitmq cluster ($running running): falling back to node 1 alone"
    for i in 2 3; do [ -s "${r_dir[i]}/beam.pid" ] && stop_pid "$(cat "${r_dir[i]}/beam.pid")"; done
    rmq_setup="single node (a three-node cluster could not be formed; see the log above)"
  fi
fi
rmq_url=amqp://guest:guest@127.0.0.1:${r_amqp[1]}/
rmq_version=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo unknown)
log "rabbitmq: $rmq_setup"

# ---- runs ------------------------------------------------------------------------------------
runs=$results/runs.tsv
: >"$runs"
for s in "${scenarios[@]}"; do
  IFS='|' read -r name rargs pargs <<<"$s"
  for rep in $(seq "$repeats"); do
    for b in rabbitmq parley; do
      url=$rmq_url a=$rargs
      [ "$b" = parley ] && url=$parley_url a=$pargs
      out=$results/$name.$b.$rep.json
      log "$name  $b  run $rep/$repeats"
      # shellcheck disable=SC2086 # a is a list of flags by design
      if "$tmp/parley-bench" amqp -url "$url" -label "$b" -duration "$duration" -json $a </dev/null >"$out" 2>"$results/$name.$b.$rep.log"; then status=ok; else status=failed; fi
      if [ -s "$out" ] && jq -e . "$out" >/dev/null 2>&1; then
        [ "$(jq -r '.timed_out' "$out")" = true ] && status=timeout
        jq -r --arg n "$name" --arg b "$b" --arg r "$rep" --arg s "$status" \
          '[$n, $b, $r, .in_msgs_per_sec, .out_msgs_per_sec, .latency_us.p99, .accounting.lost,
            .accounting.duplicates, $s, .latency_us.p50] | @tsv' "$out" >>"$runs"
      else
        printf '%s\t%s\t%s\t0\t0\t0\t0\t0\tfailed\t0\n' "$name" "$b" "$rep" >>"$runs"
        log "$name $b run $rep failed:"; tail -5 "$results/$name.$b.$rep.log" >&2
      fi
    done
  done
done

# ---- summary ---------------------------------------------------------------------------------
stats() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit}
  m = (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%.0f %.0f %.0f\n", m, v[1], v[NR]}'; }
col() { awk -F'\t' -v n="$1" -v b="$2" -v c="$3" '$1==n && $2==b && $9!="failed" {print $c}' "$runs"; }
sum_col() { awk -F'\t' -v n="$1" -v b="$2" -v c="$3" '$1==n && $2==b {s+=$c} END {print s+0}' "$runs"; }
okruns() { awk -F'\t' -v n="$1" -v b="$2" '$1==n && $2==b {t++; if ($9=="ok") o++} END {printf "%d/%d", o, t}' "$runs"; }
ms() { if [ "${1:--}" = - ]; then echo -; else awk -v v="$1" 'BEGIN {printf "%.1f", v/1000}'; fi; }
summary=$results/summary.md
{
  echo "| scenario | broker | out msg/s median (min–max) | in msg/s median | p50 / p99 latency ms (medians) | lost / dup (all runs) | runs ok | Parley ÷ RabbitMQ: out msg/s |"
  echo "|---|---|---|---|---|---|---|---|"
  for s in "${scenarios[@]}"; do
    name=${s%%|*}
    read -r pout _ _ <<<"$(col "$name" parley 5 | stats) "
    for b in rabbitmq parley; do
      read -r omed omin omax <<<"$(col "$name" "$b" 5 | stats) "
      read -r imed _ _ <<<"$(col "$name" "$b" 4 | stats) "
      read -r p99 _ _ <<<"$(col "$name" "$b" 6 | stats) "
      read -r p50 _ _ <<<"$(col "$name" "$b" 10 | stats) "
      r=
      [ "$b" = rabbitmq ] && r=$(awk -v a="${pout:--}" -v b="${omed:--}" 'BEGIN {if (a != "-" && b != "-" && b+0 > 0) printf "%.2f×", a/b; else print "n/a"}')
      echo "| $name | $b | ${omed:--} (${omin:--}–${omax:--}) | ${imed:--} | $(ms "${p50:-}") / $(ms "${p99:-}") | $(sum_col "$name" "$b" 7) / $(sum_col "$name" "$b" 8) | $(okruns "$name" "$b") | $r |"
    done
  done
} >"$summary"

echo
echo "machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(go version | cut -d' ' -f3), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "parley: three nodes on loopback ($parley_src), clients on node $parley_serving (the serving node)"
if [ "$spread" = 1 ]; then
  hosted=
  for i in 1 2 3; do hosted+=" node $i: $(grep -c 'hosting queue' "$tmp/parley-$i/out.log" || true)"; done
  parley_runs=$(( ${#scenarios[@]} * repeats ))
  echo "parley: cluster.spread_queues on; queues hosted by a standby (the others ran on the serving node), of $parley_runs runs:$hosted"
fi
echo "rabbitmq $rmq_version: $rmq_setup, clients on node 1 (the quorum queue's leader)"
echo "runs: $repeats × $duration per scenario and broker, interleaved; raw results in $results"
echo
cat "$summary"
[ -n "$summary_out" ] && cp "$summary" "$summary_out"
exit 0
