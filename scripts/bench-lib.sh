# Helpers shared by scripts/bench.sh and scripts/profile.sh (sourced, not run). The caller sets
# $tmp (a private temp dir) before calling build_parley/start_parley.

log() { echo "${log_prefix:-bench}: $*" >&2; }
die() { log "$*"; exit 1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { # a random unprivileged port nobody listens on, below the ephemeral range (where a
  # port can be bound by an outgoing connection without listening)
  local p lo
  lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  for _ in $(seq 100); do
    p=$((10000 + RANDOM % (lo - 10000)))
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

# Every broker and the load generator get the same file limit: 65536 where allowed, else as
# high as the hard limit goes (10,000 idle connections need more than the usual 1024).
raise_nofile() { ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; }

stop_pid() { # pid: TERM, then KILL after 20s
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
}

# build_parley: builds $tmp/bin/parley from the working tree, or from HEAD if the tree does not
# build (others may be mid-edit; git archive leaves the repository alone). Sets parley_src.
build_parley() {
  mkdir -p "$tmp/parley"
  parley_src="working tree at $(git rev-parse --short HEAD)"
  [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && parley_src+=" with uncommitted changes"
  if ! go build -o "$tmp/bin/parley" ./cmd/parley 2>"$tmp/parley/build.log"; then
    log "parley does not build from the working tree; trying HEAD ($(git rev-parse --short HEAD))"
    mkdir -p "$tmp/src"
    git archive HEAD | tar -x -C "$tmp/src"
    if (cd "$tmp/src" && go build -o "$tmp/bin/parley" ./cmd/parley) 2>>"$tmp/parley/build.log"; then
      parley_src="commit $(git rev-parse --short HEAD)"
    else
      rm -f "$tmp/bin/parley"
      log "parley does not build:"; tail -20 "$tmp/parley/build.log" >&2
      return 1
    fi
  fi
}

# start_parley [extra flags...]: starts $tmp/bin/parley on free loopback ports with its data in
# $tmp/parley/data, AMQP, MQTT, STOMP and Web-STOMP on. Sets parley_pid and parley_amqp,
# parley_mqtt, parley_stomp, parley_ws_stomp to host:port, or empty for a listener that is not
# up (a protocol this Parley does not serve yet). Returns 1 if AMQP does not come up.
start_parley() {
  local pa pm ps pw
  pa=$(free_port) pm=$(free_port) ps=$(free_port) pw=$(free_port)
  log "starting parley: amqp $pa, mqtt $pm, stomp $ps, ws-stomp $pw"
  (
    raise_nofile
    exec "$tmp/bin/parley" --data-dir "$tmp/parley/data" --amqp "127.0.0.1:$pa" --amqps off \
      --mqtt "127.0.0.1:$pm" --mqtts off --stomp "127.0.0.1:$ps" --stomps off --http off \
      --ws-stomp "127.0.0.1:$pw" --ws-mqtt off --ws off --prometheus off --cluster off \
      --log-level warn "$@"
  ) >"$tmp/parley/out.log" 2>&1 &
  parley_pid=$!
  parley_amqp= parley_mqtt= parley_stomp= parley_ws_stomp=
  if ! wait_port "$pa" 30 "$parley_pid"; then
    log "parley did not start; last lines of its output:"; tail -20 "$tmp/parley/out.log" >&2
    stop_pid "$parley_pid"; parley_pid=
    return 1
  fi
  parley_amqp=127.0.0.1:$pa
  # The other listeners start with AMQP or not at all ("not available yet" in its log).
  sleep 1
  port_in_use "$pm" && parley_mqtt=127.0.0.1:$pm
  port_in_use "$ps" && parley_stomp=127.0.0.1:$ps
  port_in_use "$pw" && parley_ws_stomp=127.0.0.1:$pw
  log "parley up (pid $parley_pid): mqtt ${parley_mqtt:-n/a}, stomp ${parley_stomp:-n/a}, ws-stomp ${parley_ws_stomp:-n/a}"
}

# scenario_lines [regex]: the scenario file without comments, trimmed, filtered by name.
scenario_lines() {
  grep -v '^[[:space:]]*#' "$(dirname "${BASH_SOURCE[0]}")/bench-scenarios.txt" | grep -v '^[[:space:]]*$' |
    sed 's/[[:space:]]*|[[:space:]]*/|/g; s/^[[:space:]]*//; s/[[:space:]]*$//' |
    awk -F'|' -v re="${1:-.}" '$1 ~ re'
}

# wait_quiet PID [MAX_SECONDS]: waits until the process uses under 10% of a CPU over 2 s, at most
# MAX_SECONDS (default 120): a broker that just closed 10,000 connections is still tearing them
# down, and the next scenario must not measure (or time out on) that.
wait_quiet() {
  local pid=$1 max=${2:-120} t0 t1 hz deadline
  hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
  deadline=$((SECONDS + max))
  while [ $SECONDS -lt $deadline ] && [ -r "/proc/$pid/stat" ]; do
    t0=$(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null) || return 0
    sleep 2
    t1=$(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null) || return 0
    [ $((t1 - t0)) -lt $((hz / 5)) ] && return 0
  done
  return 0
}

# stop_on_exit: when the script ends (or is interrupted), stop the processes in bench_pid,
# parley_pid and mosq_pid (those set) and remove $tmp; for the single-broker scripts
# (profile.sh, cpu-stages.sh, cpu-per-msg.sh).
stop_on_exit() {
  bench_pid= parley_pid= mosq_pid=
  trap _stop_on_exit EXIT
  trap 'exit 130' INT TERM
}
_stop_on_exit() {
  local rc=$?
  [ -n "$bench_pid" ] && stop_pid "$bench_pid"
  [ -n "$parley_pid" ] && stop_pid "$parley_pid"
  [ -n "$mosq_pid" ] && stop_pid "$mosq_pid"
  rm -rf "$tmp"
  exit $rc
}
