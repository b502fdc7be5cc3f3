#!/usr/bin/python3
"""Parley's stomp.py checks (Debian python3-stomp), run by integration/python_test.go.

Usage: stomp_suite.py HOST PORT NAME_PREFIX
Runs each check against STOMP 1.0, 1.1 and 1.2 and prints one line per check, then
"stomp.py checks: N ok, M failed". Every wait is bounded.
"""
import queue
import sys
import traceback

import stomp

TIMEOUT = 10


class Collector(stomp.ConnectionListener):
    """Puts every MESSAGE, RECEIPT and ERROR on queues the checks read with timeouts."""

    def __init__(self):
        self.messages = queue.Queue()
        self.receipts = queue.Queue()
        self.errors = queue.Queue()

    def on_message(self, frame):
        self.messages.put(frame)

    def on_receipt(self, frame):
        self.receipts.put(frame.headers.get("receipt-id"))

    def on_error(self, frame):
        self.errors.put(frame)

    def message(self):
        try:
            return self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("no MESSAGE within %ds" % TIMEOUT)

    def no_message(self, wait=0.3):
        try:
            f = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError("unexpected MESSAGE %r" % f.body)

    def receipt(self, rid):
        try:
            got = self.receipts.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("no RECEIPT %s within %ds" % (rid, TIMEOUT))
        assert got == rid, "RECEIPT %s, want %s" % (got, rid)


CONNECTIONS = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}


def connect(version, host, port):
    cls = CONNECTIONS[version]
    if version == "1.0":
        c = cls([(host, port)])
    else:
        c = cls([(host, port)], vhost="/", heartbeats=(0, 0))
    col = Collector()
    c.set_listener("collector", col)
    if version == "1.0":
        c.connect("guest", "guest", wait=True, headers={"host": "/"})
    else:
        c.connect("guest", "guest", wait=True)
    return c, col


def ack(c, version, frame, sub_id):
    h = frame.headers
    if version == "1.2":
        c.ack(h["ack"])
    elif version == "1.1":
        c.ack(h["message-id"], sub_id)
    else:
        c.ack(h["message-id"])


def nack(c, version, frame, sub_id):
    h = frame.headers
    if version == "1.2":
        c.nack(h["ack"])
    else:
        c.nack(h["message-id"], sub_id)


def check_send_receive(version, host, port, name):
    c, col = connect(version, host, port)
    dest = "/queue/%s-sr-%s" % (name, version)
    c.subscribe(destination=dest, id="s1", ack="client-individual")
    c.send(body="hello from stomp.py", destination=dest, headers={"receipt": "r1", "x-k": "v"})
    col.receipt("r1")
    f = col.message()
    assert f.body == "hello from stomp.py", f.body
    assert f.headers["x-k"] == "v", f.headers
    assert f.headers["destination"] == dest, f.headers
    ack(c, version, f, "s1")
    c.disconnect(receipt="bye")


def check_nack_requeues(version, host, port, name):
    c, col = connect(version, host, port)
    dest = "/queue/%s-nack-%s" % (name, version)
    c.subscribe(destination=dest, id="s1", ack="client-individual")
    c.send(body="again", destination=dest)
    f = col.message()
    nack(c, version, f, "s1")
    f2 = col.message()
    assert f2.body == "again" and f2.headers.get("redelivered") == "true", f2.headers
    ack(c, version, f2, "s1")
    c.disconnect(receipt="bye")


def check_transaction(version, host, port, name):
    c, col = connect(version, host, port)
    dest = "/queue/%s-tx-%s" % (name, version)
    c.subscribe(destination=dest, id="s1", ack="auto")
    tx = c.begin()
    c.send(body="t1", destination=dest, transaction=tx)
    col.no_message()
    c.commit(tx)
    assert col.message().body == "t1"
    tx = c.begin()
    c.send(body="t2", destination=dest, transaction=tx)
    c.abort(tx)
    col.no_message()
    c.disconnect(receipt="bye")


def check_topic_fanout(version, host, port, name):
    a, ca = connect(version, host, port)
    b, cb = connect(version, host, port)
    dest = "/topic/%s.fan.%s" % (name, version.replace(".", ""))
    a.subscribe(destination=dest, id="a", ack="auto", headers={"receipt": "sa"})
    ca.receipt("sa")
    b.subscribe(destination=dest, id="b", ack="auto", headers={"receipt": "sb"})
    cb.receipt("sb")
    a.send(body="to all", destination=dest)
    assert ca.message().body == "to all"
    assert cb.message().body == "to all"
    a.disconnect(receipt="bye")
    b.disconnect(receipt="bye")


CHECKS = [check_send_receive, check_nack_requeues, check_transaction, check_topic_fanout]


def main():
    host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ok = failed = 0
    for version in ("1.0", "1.1", "1.2"):
        for check in CHECKS:
            if check is check_nack_requeues and version == "1.0":
                continue  # NACK is STOMP 1.1+
            label = "%s %s" % (check.__name__, version)
            try:
                check(version, host, port, name)
                print("ok     " + label)
                ok += 1
            except Exception:
                print("FAILED " + label)
                traceback.print_exc(file=sys.stdout)
                failed += 1
    print("stomp.py checks: %d ok, %d failed" % (ok, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
