#!/usr/bin/env bash
# Installs what the tests need on a Debian machine, idempotently: python3-pika and python3-stomp
# and python3-paho-mqtt (for integration/python), amqp-tools (rabbitmq-c's command-line tools),
# mosquitto-clients (mosquitto_pub, mosquitto_sub), chromium (the browser tests), mosquitto
# (cmd/parley-bench runs its MQTT mode against a private one), iproute2 (ip netns: the cluster
# partition tests run each node in its own network namespace), nodejs and npm when no node is on
# the PATH, and the npm packages of integration/node and integration/browser from their
# package-lock.json.
# Runs as root without a terminal (CI); as another user it uses sudo when it must install.
# `make test` calls it.
set -euo pipefail

cd "$(dirname "$0")/.."

need=()
for pkg in python3-pika python3-stomp python3-paho-mqtt amqp-tools mosquitto-clients mosquitto chromium iproute2; do
	if ! dpkg -s "$pkg" >/dev/null 2>&1; then
		need+=("$pkg")
	fi
done
if ! command -v node >/dev/null 2>&1; then
	need+=(nodejs)
fi
if ! command -v npm >/dev/null 2>&1; then
	need+=(npm)
fi

if ((${#need[@]} > 0)); then
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		sudo=(sudo -n)
	fi
	echo "install-test-deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -q
	"${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# npm ci installs exactly the lock file's versions; a stamp of the lock file it installed from
# lets a second run skip it.
for dir in integration/node integration/browser; do
	lock=$dir/package-lock.json
	stamp=$dir/node_modules/.parley-lock.sha256
	want=$(sha256sum "$lock" | cut -d' ' -f1)
	if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
		echo "install-test-deps: npm ci in $dir"
		(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
		echo "$want" >"$stamp"
	fi
done
echo "install-test-deps: ok"
