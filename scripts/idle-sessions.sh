#!/usr/bin/env bash
# What N idle persistent MQTT sessions cost a three-node cluster (issue 7 item 2, partition
# groups): starts three parley processes on loopback (ports 3xx00 + node), creates N MQTT 3.1.1
# sessions with clean-session 0 through node 1 (each subscribes to its own topic at QoS 1, then
# disconnects), lets the cluster settle, then samples each process's CPU time (user + system,
# /proc/PID/stat) over SAMPLE seconds and its resident memory, and prints one line per node and
# the total. Everything runs from a temporary directory that is removed at the end.
#
#   BIN=path/to/parley SESSIONS=10000 SETTLE=20 SAMPLE=30 bash scripts/idle-sessions.sh
#
# BIN defaults to a build of ./cmd/parley; PARTITION_GROUPS (default: the binary's default)
# sets cluster.partition_groups in each node's configuration (a build before partition groups
# does not know the key: leave it unset for that one).
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS=${SESSIONS:-10000}
SETTLE=${SETTLE:-20}
SAMPLE=${SAMPLE:-30}
BASE=${BASE:-31000}
work=$(mktemp -d /tmp/parley-idle-sessions.XXXXXX)
pids=()
cleanup() {
	# Stopped together, a node may see its peers go first and re-execute itself as a standby
	# (cmd/parley/cluster.go) rather than stop: what is left after 15 s is killed.
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for _ in $(seq 1 75); do
		alive=0
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[[ $alive == 0 ]] && break
		sleep 0.2
	done
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
if [[ -z "${BIN:-}" ]]; then
	BIN=$work/parley
	go build -o "$BIN" ./cmd/parley
fi
peers="1=127.0.0.1:$((BASE + 1)),2=127.0.0.1:$((BASE + 2)),3=127.0.0.1:$((BASE + 3))"
for n in 1 2 3; do
	mkdir -p "$work/n$n"
	{
		echo "data_dir: $work/n$n/data"
		echo "node_id: parley-$n"
		echo "amqp: \"127.0.0.1:$((BASE + 100 + n))\""
		echo "mqtt: \"127.0.0.1:$((BASE + 200 + n))\""
		echo "http: \"127.0.0.1:$((BASE + 300 + n))\""
		for l in amqps mqtts stomp stomps ws_stomp ws_mqtt ws prometheus; do echo "$l: \"off\""; done
		echo "cluster:"
		echo "  listen: \"127.0.0.1:$((BASE + n))\""
		echo "  peers: \"$peers\""
		if [[ -n "${PARTITION_GROUPS:-}" ]]; then echo "  partition_groups: $PARTITION_GROUPS"; fi
	} >"$work/n$n/parley.yaml"
	"$BIN" --config "$work/n$n/parley.yaml" >"$work/n$n/log" 2>&1 &
	pids+=($!)
done
# Wait until one node serves.
for _ in $(seq 1 300); do
	if curl -fsS "http://127.0.0.1:$((BASE + 301))/api/cluster/status" 2>/dev/null | grep -q '"serving":true' ||
		curl -fsS "http://127.0.0.1:$((BASE + 302))/api/cluster/status" 2>/dev/null | grep -q '"serving":true' ||
		curl -fsS "http://127.0.0.1:$((BASE + 303))/api/cluster/status" 2>/dev/null | grep -q '"serving":true'; then
		break
	fi
	sleep 0.2
done
start=$(date +%s)
/usr/bin/python3 - "$((BASE + 201))" "$SESSIONS" <<'EOF'
# A minimal MQTT 3.1.1 client: CONNECT (clean session 0), SUBSCRIBE QoS 1, DISCONNECT.
import socket, struct, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
def rl(x):
    out = b""
    while True:
        b, x = x % 128, x // 128
        out += bytes([b | (0x80 if x else 0)])
        if not x:
            return out
def s(b):
    b = b.encode()
    return struct.pack(">H", len(b)) + b
def readpkt(c):
    h = c.recv(1)
    if not h:
        raise IOError("closed")
    mult, ln = 1, 0
    while True:
        b = c.recv(1)[0]
        ln += (b & 127) * mult
        mult *= 128
        if b < 128:
            break
    body = b""
    while len(body) < ln:
        body += c.recv(ln - len(body))
    return h[0], body
errors = []
def session(i):
    for attempt in range(20):
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=30)
            vh = s("MQTT") + bytes([4, 0xC0, 0, 60])  # user+password, clean session 0
            pl = s("idle-%d" % i) + s("guest") + s("guest")
            c.sendall(bytes([0x10]) + rl(len(vh) + len(pl)) + vh + pl)
            t, b = readpkt(c)
            if t != 0x20 or b[1] != 0:
                raise IOError("connack %r" % b)
            sub = struct.pack(">H", 1) + s("idle/%d" % i) + bytes([1])
            c.sendall(bytes([0x82]) + rl(len(sub)) + sub)
            t, b = readpkt(c)
            if t != 0x90:
                raise IOError("suback %r" % b)
            c.sendall(bytes([0xE0, 0]))
            c.close()
            return
        except Exception as e:
            last = e
    errors.append("session %d: %s" % (i, last))
def worker(k):
    for i in range(k, n, 8):
        session(i)
ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
for t in ts: t.start()
for t in ts: t.join()
if errors:
    print("%d sessions failed, first: %s" % (len(errors), errors[0]), file=sys.stderr)
    sys.exit(1)
EOF
echo "created $SESSIONS persistent sessions in $(($(date +%s) - start)) s; settling ${SETTLE} s"
sleep "$SETTLE"
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A before
for p in "${pids[@]}"; do before[$p]=$(cpu "$p"); done
sleep "$SAMPLE"
total_cpu=0
total_rss=0
n=0
for p in "${pids[@]}"; do
	n=$((n + 1))
	used=$(($(cpu "$p") - ${before[$p]}))
	rss=$(awk '/VmRSS/ {print $2}' "/proc/$p/status")
	groups=$(curl -fsS "http://127.0.0.1:$((BASE + 300 + n))/api/cluster/status" | /usr/bin/python3 -c 'import json, sys; print(len(json.load(sys.stdin)["groups"]))')
	printf 'node %d: CPU %.2f %% of a core, RSS %d MiB, %d raft groups\n' "$n" "$(echo "100 * $used / $tick / $SAMPLE" | bc -l)" $((rss / 1024)) "$groups"
	total_cpu=$((total_cpu + used))
	total_rss=$((total_rss + rss))
done
printf 'total: CPU %.2f %% of a core, RSS %d MiB\n' "$(echo "100 * $total_cpu / $tick / $SAMPLE" | bc -l)" $((total_rss / 1024))
