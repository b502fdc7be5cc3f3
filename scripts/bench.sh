#!/usr/bin/env bash
# Parley against RabbitMQ and Mosquitto on this machine, side by side, in one run (`make bench`;
# never part of `make test`). It installs what is missing (rabbitmq-server, mosquitto, jq) from
# Debian, starts a private RabbitMQ (AMQP, plus its MQTT, STOMP and Web-STOMP plugins), a private
# Mosquitto and a private Parley on free loopback ports with their data in a temp dir and a
# raised open-files limit, runs every scenario of scripts/bench-scenarios.txt against each broker
# it names, interleaved (A B C A B C ...) so drift in the machine's load hits all alike, repeats
# each -r times, and prints per scenario and broker the median msgs/s with min-max, p50/p99
# latency, lost/duplicated messages and the Parley/peer ratios. A protocol Parley does not serve
# yet reads n/a. Everything it started is stopped on exit, whatever the exit path.
#
# usage: scripts/bench.sh [-r REPEATS] [-d DURATION] [-s SCENARIO_REGEX] [-o SUMMARY.md]
#                         [-u RABBITMQ_AMQP_URL] [-p PARLEY_AMQP_URL] [-P] [-M] [-R] [-C]
#   -r N     runs per scenario and broker (default 3)
#   -d DUR   publishing time per run, Go duration (default 10s)
#   -s RE    only scenarios whose name matches RE (awk regex)
#   -o FILE  also write the summary table (markdown) to FILE
#   -u URL   use this RabbitMQ (AMQP only) instead of starting one
#   -p URL   use this Parley (AMQP only) instead of building and starting one
#   -P       do not start Parley
#   -M       do not start Mosquitto
#   -R       do not start RabbitMQ
#   -C       instead: three-node Parley against a three-node RabbitMQ cluster's quorum queues,
#            persistent with confirms (scripts/bench-cluster.sh; takes -r, -d and -o)
# Raw per-run JSON (parley-bench -json) is kept in the results directory printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

repeats=3
duration=10s
filter=.
summary_out=
rmq_url=
parley_url=
no_parley=0
no_mosquitto=0
no_rabbitmq=0
cluster=0
while getopts "r:d:s:o:u:p:PMRCh" opt; do
  case "$opt" in
    r) repeats=$OPTARG ;;
    d) duration=$OPTARG ;;
    s) filter=$OPTARG ;;
    o) summary_out=$OPTARG ;;
    u) rmq_url=$OPTARG ;;
    p) parley_url=$OPTARG ;;
    P) no_parley=1 ;;
    M) no_mosquitto=1 ;;
    R) no_rabbitmq=1 ;;
    C) cluster=1 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
if [ "$cluster" = 1 ]; then
  exec bash scripts/bench-cluster.sh -r "$repeats" -d "$duration" ${summary_out:+-o "$summary_out"}
fi
scenario_lines "$filter" | grep -q . || die "no scenario matches '$filter'"

# ---- prerequisites ---------------------------------------------------------------------------
need_pkgs=()
command -v jq >/dev/null || need_pkgs+=(jq)
if [ "$no_rabbitmq" = 0 ] && [ -z "$rmq_url" ] && ! command -v rabbitmq-server >/dev/null; then need_pkgs+=(rabbitmq-server); fi
if [ "$no_mosquitto" = 0 ] && ! command -v mosquitto >/dev/null && ! [ -x /usr/sbin/mosquitto ]; then need_pkgs+=(mosquitto); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need_pkgs[*]}: run as root to apt-get install them, or install them yourself"
  log "installing ${need_pkgs[*]} from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # The packages may start system-wide services on the standard ports; ours are private and
  # do not need them (where policy-rc.d forbids starting services, none start).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)

tmp=$(mktemp -d /tmp/parley-bench.XXXXXX)
results=$(mktemp -d /tmp/parley-bench-results.XXXXXX)
rmq_pid_file=
rmq_launcher=
mosq_pid=
parley_pid=

cleanup() {
  local rc=$?
  if [ -n "$parley_pid" ]; then log "stopping parley"; stop_pid "$parley_pid"; fi
  if [ -n "$mosq_pid" ]; then log "stopping mosquitto"; stop_pid "$mosq_pid"; fi
  if [ -n "$rmq_pid_file" ] && [ -s "$rmq_pid_file" ]; then
    log "stopping rabbitmq"; stop_pid "$(cat "$rmq_pid_file")"
  fi
  [ -n "$rmq_launcher" ] && stop_pid "$rmq_launcher"
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

raise_nofile # for parley-bench itself: idle scenarios hold 10,000 connections
log "open-files limit for every broker and the load generator: $(ulimit -n)"

# ---- build -----------------------------------------------------------------------------------
log "building parley-bench"
go build -o "$tmp/parley-bench" ./cmd/parley-bench

# ---- RabbitMQ --------------------------------------------------------------------------------
rmq_version=n/a rmq_mqtt= rmq_stomp= rmq_ws_stomp=
if [ "$no_rabbitmq" = 0 ] && [ -z "$rmq_url" ]; then
  rdir=$tmp/rabbitmq
  mkdir -p "$rdir/mnesia" "$rdir/log"
  echo '[rabbitmq_mqtt,rabbitmq_stomp,rabbitmq_web_stomp].' >"$rdir/enabled_plugins"
  amqp_port=$(free_port) dist_port=$(free_port)
  rmq_mqtt=127.0.0.1:$(free_port) rmq_stomp=127.0.0.1:$(free_port) ws_port=$(free_port)
  rmq_ws_stomp=127.0.0.1:$ws_port
  cat >"$rdir/rabbitmq.conf" <<EOF
mqtt.listeners.tcp.default = $rmq_mqtt
stomp.listeners.tcp.1 = $rmq_stomp
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = $ws_port
EOF
  rmq_pid_file=$rdir/beam.pid
  launcher=(rabbitmq-server)
  if [ "$(id -u)" = 0 ]; then
    # As root, Debian's wrapper re-executes the server through su, whose PAM session resets the
    # open-files limit to 1024; setpriv switches to the rabbitmq user and keeps our limit.
    chown -R rabbitmq:rabbitmq "$rdir"
    chmod 755 "$tmp"
    launcher=(setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server)
  fi
  log "starting rabbitmq: amqp $amqp_port, mqtt $rmq_mqtt, stomp $rmq_stomp, web-stomp $ws_port (data in $rdir)"
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
    exec "${launcher[@]}"
  ) >"$rdir/out.log" 2>&1 &
  rmq_launcher=$!
  wait_port "$amqp_port" 120 "$rmq_launcher" ||
    die "rabbitmq did not start; last lines of its output:$(echo; tail -20 "$rdir/out.log")"
  # The plugins' listeners come up after AMQP.
  for p in "${rmq_mqtt#*:}" "${rmq_stomp#*:}" "$ws_port"; do wait_port "$p" 60 "$rmq_launcher" || log "rabbitmq: port $p not listening"; done
  rmq_url=amqp://guest:guest@127.0.0.1:$amqp_port/
  rmq_version=$(grep -ohE 'RabbitMQ [0-9]+\.[0-9]+\.[0-9]+' "$rdir/out.log" "$rdir/log/"*.log 2>/dev/null | head -1 | cut -d' ' -f2)
  log "rabbitmq up (pid $(cat "$rmq_pid_file" 2>/dev/null)), open-files limit $(awk '/open files/ {print $4}' "/proc/$(cat "$rmq_pid_file")/limits" 2>/dev/null)"
fi
[ "$rmq_version" = n/a ] && rmq_version=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo unknown)

# ---- Mosquitto -------------------------------------------------------------------------------
mosq_addr=
mosq_version=n/a
if [ "$no_mosquitto" = 0 ]; then
  mdir=$tmp/mosquitto
  mkdir -p "$mdir"
  mport=$(free_port)
  # max_queued_messages 0: Mosquitto's default (1000) drops QoS 1/2 messages queued for a
  # subscriber beyond that; no limit makes it keep them, as RabbitMQ and Parley do.
  cat >"$mdir/mosquitto.conf" <<EOF
listener $mport 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
log_dest stderr
log_type error
log_type warning
EOF
  chmod 755 "$tmp" "$mdir"
  log "starting mosquitto on 127.0.0.1:$mport"
  ( raise_nofile; exec "$mosquitto_bin" -c "$mdir/mosquitto.conf" ) >"$mdir/out.log" 2>&1 &
  mosq_pid=$!
  if wait_port "$mport" 20 "$mosq_pid"; then
    mosq_addr=127.0.0.1:$mport
    mosq_version=$( ("$mosquitto_bin" -h 2>/dev/null || true) | awk '/version/ {print $3; exit}')
  else
    log "mosquitto did not start:"; tail -20 "$mdir/out.log" >&2; stop_pid "$mosq_pid"; mosq_pid=
  fi
fi

# ---- Parley ----------------------------------------------------------------------------------
parley_amqp= parley_mqtt= parley_stomp= parley_ws_stomp=
if [ -n "$parley_url" ]; then
  parley_src=$parley_url
elif [ "$no_parley" = 0 ] && build_parley; then
  start_parley || true
fi
[ -n "$parley_amqp" ] && parley_url=amqp://guest:guest@$parley_amqp/
[ -n "$parley_url" ] || log "parley: n/a"

# ---- scenarios -------------------------------------------------------------------------------
# url_of BROKER MODE: where parley-bench connects, or nothing if that broker does not serve it.
url_of() {
  local b=$1 m=$2 a=
  case "$b:$m" in
    rabbitmq:amqp | rabbitmq:idle-amqp) echo "$rmq_url"; return ;;
    parley:amqp | parley:idle-amqp) echo "$parley_url"; return ;;
    rabbitmq:mqtt | rabbitmq:idle-mqtt) a=$rmq_mqtt ;;
    mosquitto:mqtt | mosquitto:idle-mqtt) a=$mosq_addr ;;
    parley:mqtt | parley:idle-mqtt) a=$parley_mqtt ;;
    rabbitmq:stomp) a=$rmq_stomp ;;
    parley:stomp) a=$parley_stomp ;;
    rabbitmq:stomp-ws) [ -z "$rmq_ws_stomp" ] || echo "ws://$rmq_ws_stomp/ws"; return 0 ;;
    parley:stomp-ws) [ -z "$parley_ws_stomp" ] || echo "ws://$parley_ws_stomp/ws"; return 0 ;;
  esac
  [ -z "$a" ] && return
  case "$m" in
    mqtt | idle-mqtt) echo "tcp://$a" ;;
    stomp) echo "stomp://guest:guest@$a/" ;;
  esac
}
pid_of() {
  case "$1" in
    rabbitmq) if [ -n "$rmq_pid_file" ]; then cat "$rmq_pid_file" 2>/dev/null || true; fi ;;
    mosquitto) echo "$mosq_pid" ;;
    parley) echo "$parley_pid" ;;
  esac
}

# One line per run: scenario broker rep in out p99_us lost dup redelivered status p50_us
# bytes_per_conn connects_per_sec
runs=$results/runs.tsv
: >"$runs"
while IFS='|' read -r name brokers mode args parley_args; do
  for rep in $(seq "$repeats"); do
    for b in $brokers; do
      url=$(url_of "$b" "$mode")
      if [ -z "$url" ]; then [ "$rep" != 1 ] || log "$name  $b: n/a (not served)"; continue; fi
      # An idle run measures memory growth from a broker's resident size, which never shrinks
      # back after a run (allocators and garbage collectors keep what they freed): only the
      # first run, on a freshly started broker that has served nothing else, measures it.
      case "$mode" in idle-*) [ "$rep" = 1 ] || continue ;; esac
      a=$args
      [ "$b" = parley ] && [ -n "$parley_args" ] && a=$parley_args
      out=$results/$name.$b.$rep.json
      log "$name  $b  run $rep/$repeats"
      case "$mode" in
        idle-*)
          pid=$(pid_of "$b")
          # shellcheck disable=SC2086 # args is a list of flags by design
          cmd=("$tmp/parley-bench" idle -url "$url" -label "$b" -json ${pid:+-pid "$pid"} $a) ;;
        *)
          # shellcheck disable=SC2086
          cmd=("$tmp/parley-bench" "${mode%-ws}" -url "$url" -label "$b" -duration "$duration" -json $a) ;;
      esac
      if "${cmd[@]}" </dev/null >"$out" 2>"$results/$name.$b.$rep.log"; then status=ok; else status=failed; fi
      case "$mode" in
        idle-*) # the broker is still closing the connections: let it finish before going on
          if [ -n "${pid:-}" ]; then wait_quiet "$pid"; else sleep 30; fi ;;
      esac
      if [ -s "$out" ] && jq -e . "$out" >/dev/null 2>&1; then
        [ "$(jq -r '.timed_out' "$out")" = true ] && status=timeout
        jq -r --arg n "$name" --arg b "$b" --arg r "$rep" --arg s "$status" \
          '[$n, $b, $r, .in_msgs_per_sec, .out_msgs_per_sec, .latency_us.p99, .accounting.lost,
            .accounting.duplicates, .accounting.redelivered, $s, .latency_us.p50,
            (.idle.bytes_per_conn // 0), (.idle.connects_per_sec // 0)] | @tsv' "$out" >>"$runs"
      else
        printf '%s\t%s\t%s\t0\t0\t0\t0\t0\t0\tfailed\t0\t0\t0\n' "$name" "$b" "$rep" >>"$runs"
        log "$name $b run $rep failed:"; tail -5 "$results/$name.$b.$rep.log" >&2
      fi
    done
  done
done < <(scenario_lines "$filter")

# ---- summary ---------------------------------------------------------------------------------
# median, min and max of the values on stdin
stats() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit}
  m = (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%.0f %.0f %.0f\n", m, v[1], v[NR]}'; }
col() { awk -F'\t' -v n="$1" -v b="$2" -v c="$3" '$1==n && $2==b && $10!="failed" {print $c}' "$runs"; }
sum_col() { awk -F'\t' -v n="$1" -v b="$2" -v c="$3" '$1==n && $2==b {s+=$c} END {print s+0}' "$runs"; }
count_runs() { awk -F'\t' -v n="$1" -v b="$2" -v ok="${3:-}" '$1==n && $2==b && (ok=="" || $10=="ok") {c++} END {print c+0}' "$runs"; }
ms() { if [ "${1:--}" = - ]; then echo -; else awk -v v="$1" 'BEGIN {printf "%.1f", v/1000}'; fi; }
ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN {if (a != "-" && b != "-" && b+0 > 0) printf "%.2f×", a/b; else print "n/a"}'; }

summary=$results/summary.md
{
  echo "| scenario | broker | out msg/s median (min–max) | in msg/s median | p50 / p99 latency ms (medians) | lost / dup (all runs) | runs ok | Parley ÷ this: out msg/s | Parley ÷ this: p99 |"
  echo "|---|---|---|---|---|---|---|---|---|"
  idle_rows=()
  while IFS='|' read -r name brokers mode _ _; do
    # Parley's medians first: every other broker's row carries the ratio against it.
    read -r pout _ _ <<<"$(col "$name" parley 5 | stats) "
    read -r pp99 _ _ <<<"$(col "$name" parley 6 | stats) "
    read -r pbpc _ _ <<<"$(col "$name" parley 12 | stats) "
    for b in $brokers; do
      if [ "$(count_runs "$name" "$b")" = 0 ]; then
        row="| $name | $b | n/a (not served) | | | | 0 | | |"
        case "$mode" in idle-*) idle_rows+=("| $name | $b | n/a (not served) | | | | |") ;; *) echo "$row" ;; esac
        continue
      fi
      ok="$(count_runs "$name" "$b" ok)/$(count_runs "$name" "$b")"
      case "$mode" in
        idle-*)
          read -r bpc bmin bmax <<<"$(col "$name" "$b" 12 | stats) "
          read -r cps _ _ <<<"$(col "$name" "$b" 13 | stats) "
          r=; [ "$b" != parley ] && r=$(ratio_of "${pbpc:--}" "${bpc:--}")
          idle_rows+=("| $name | $b | ${bpc:--} (${bmin:--}–${bmax:--}) | ${cps:--} | $ok | $r |")
          continue ;;
      esac
      read -r omed omin omax <<<"$(col "$name" "$b" 5 | stats) "
      read -r imed _ _ <<<"$(col "$name" "$b" 4 | stats) "
      read -r p99 _ _ <<<"$(col "$name" "$b" 6 | stats) "
      read -r p50 _ _ <<<"$(col "$name" "$b" 11 | stats) "
      lost=$(sum_col "$name" "$b" 7) dup=$(sum_col "$name" "$b" 8)
      ratio= lratio=
      if [ "$b" != parley ]; then
        # Throughput: above 1 means Parley is faster. Latency: below 1 means Parley is faster.
        ratio=$(ratio_of "${pout:--}" "${omed:--}")
        lratio=$(ratio_of "${pp99:--}" "${p99:--}")
      fi
      echo "| $name | $b | ${omed:--} (${omin:--}–${omax:--}) | ${imed:--} | $(ms "${p50:-}") / $(ms "${p99:-}") | $lost / $dup | $ok | $ratio | $lratio |"
    done
  done < <(scenario_lines "$filter")
  if [ ${#idle_rows[@]} -gt 0 ]; then
    echo
    echo "Idle connections: one run per broker, first, on the freshly started broker."
    echo
    echo "| scenario | broker | broker memory per idle connection, bytes, median (min–max) | connects/s median | runs ok | Parley ÷ this: bytes/conn |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${idle_rows[@]}"
  fi
} >"$summary"

echo
echo "machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(go version | cut -d' ' -f3), RabbitMQ $rmq_version, Mosquitto $mosq_version, load average $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "$parley_url" ] && echo "parley: ${parley_src:-$parley_url}; mqtt ${parley_mqtt:-n/a}, stomp ${parley_stomp:-n/a}, ws-stomp ${parley_ws_stomp:-n/a}"
echo "runs: $repeats × $duration per scenario and broker, interleaved; raw results in $results"
echo
cat "$summary"
[ -n "$summary_out" ] && cp "$summary" "$summary_out"
exit 0
