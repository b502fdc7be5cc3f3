#!/usr/bin/python3
"""Parley's pika checks: publish, consume and ack, confirms, basic.get, RPC over direct reply-to.

Run as `/usr/bin/python3 pika_suite.py AMQP_URL PREFIX`. Every check prints "ok <name>" or
"FAIL <name>: why"; the exit status is non-zero when any check failed. Queue names start with
PREFIX so that runs against one shared broker do not collide.
"""
import sys
import time
import traceback

import pika

URL = sys.argv[1]
PREFIX = sys.argv[2]
TIMEOUT = 10.0


def connect():
    params = pika.URLParameters(URL)
    params.socket_timeout = TIMEOUT
    params.blocked_connection_timeout = TIMEOUT
    return pika.BlockingConnection(params)


def declare(ch, name, **kw):
    q = PREFIX + "-" + name
    ch.queue_declare(q, auto_delete=False, **kw)
    return q


def wait_for(conn, cond, what):
    deadline = time.monotonic() + TIMEOUT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        conn.process_data_events(time_limit=0.05)


def check_publish_consume_ack(conn):
    ch = conn.channel()
    q = declare(ch, "pc")
    try:
        props = pika.BasicProperties(content_type="text/plain", headers={"k": "v", "n": 7},
                                     correlation_id="c1", delivery_mode=2, priority=3)
        for i in range(5):
            ch.basic_publish("", q, ("m%d" % i).encode(), props)
        ch.basic_qos(prefetch_count=2)
        got = []

        def on_msg(c, method, properties, body):
            got.append((method.delivery_tag, method.redelivered, properties, body))
            c.basic_ack(method.delivery_tag)

        tag = ch.basic_consume(q, on_msg)
        wait_for(conn, lambda: len(got) == 5, "5 deliveries")
        bodies = [g[3] for g in got]
        assert bodies == [b"m0", b"m1", b"m2", b"m3", b"m4"], bodies
        assert [g[0] for g in got] == [1, 2, 3, 4, 5], [g[0] for g in got]
        p = got[0][2]
        assert p.content_type == "text/plain" and p.correlation_id == "c1", p
        assert p.headers == {"k": "v", "n": 7}, p.headers
        assert p.delivery_mode == 2 and p.priority == 3, p
        ch.basic_cancel(tag)
        frame = ch.queue_declare(q, passive=True)
        assert frame.method.message_count == 0, frame.method.message_count
    finally:
        ch.queue_delete(q)
        ch.close()


def check_nack_requeue(conn):
    ch = conn.channel()
    q = declare(ch, "nack")
    try:
        ch.basic_publish("", q, b"x")
        m, _, _ = wait_get(conn, ch, q)
        ch.basic_nack(m.delivery_tag, requeue=True)
        m2, _, body = wait_get(conn, ch, q)
        assert m2.redelivered and body == b"x", (m2, body)
        ch.basic_ack(m2.delivery_tag)
    finally:
        ch.queue_delete(q)
        ch.close()


def wait_get(conn, ch, q, auto_ack=False):
    deadline = time.monotonic() + TIMEOUT
    while True:
        m, props, body = ch.basic_get(q, auto_ack=auto_ack)
        if m is not None:
            return m, props, body
        if time.monotonic() > deadline:
            raise AssertionError("queue %s stayed empty" % q)
        conn.process_data_events(time_limit=0.05)


def check_confirms(conn):
    ch = conn.channel()
    q = declare(ch, "confirms")
    try:
        ch.confirm_delivery()
        for i in range(20):
            ch.basic_publish("", q, b"c", pika.BasicProperties(delivery_mode=2))
        # Mandatory to nowhere: pika raises UnroutableError once the return and ack arrive.
        try:
            ch.basic_publish("amq.direct", "no-such-key-" + PREFIX, b"lost", mandatory=True)
            raise AssertionError("unroutable mandatory publish did not raise")
        except pika.exceptions.UnroutableError:
            pass
        frame = ch.queue_declare(q, passive=True)
        assert frame.method.message_count == 20, frame.method.message_count
    finally:
        ch.queue_delete(q)
        ch.close()


def check_confirm_nack(conn):
    ch = conn.channel()
    q = declare(ch, "reject", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    try:
        ch.confirm_delivery()
        ch.basic_publish("", q, b"1")
        try:
            ch.basic_publish("", q, b"2")
            raise AssertionError("publish to a full reject-publish queue was not nacked")
        except pika.exceptions.NackError:
            pass
    finally:
        ch.queue_delete(q)
        ch.close()


def check_basic_get(conn):
    ch = conn.channel()
    q = declare(ch, "get")
    try:
        m, _, _ = ch.basic_get(q, auto_ack=True)
        assert m is None, "get on an empty queue returned a message"
        for i in range(3):
            ch.basic_publish("", q, ("g%d" % i).encode())
        m, _, body = wait_get(conn, ch, q, auto_ack=True)
        assert body == b"g0", body
        assert m.message_count == 2, m.message_count
        m, _, body = wait_get(conn, ch, q)
        assert body == b"g1" and m.message_count == 1, (body, m.message_count)
        ch.basic_reject(m.delivery_tag, requeue=False)
        frame = ch.queue_declare(q, passive=True)
        assert frame.method.message_count == 1, frame.method.message_count
    finally:
        ch.queue_delete(q)
        ch.close()


def check_rpc_direct_reply_to(conn):
    server_conn = connect()
    try:
        sch = server_conn.channel()
        q = declare(sch, "rpc")

        def on_request(c, method, props, body):
            c.basic_publish("", props.reply_to, b"pong:" + body,
                            pika.BasicProperties(correlation_id=props.correlation_id))
            c.basic_ack(method.delivery_tag)

        sch.basic_consume(q, on_request)
        cch = conn.channel()
        replies = []
        cch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append((p.correlation_id, b)),
                          auto_ack=True)
        for i in range(3):
            cch.basic_publish("", q, ("ping%d" % i).encode(),
                              pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="id%d" % i))
            deadline = time.monotonic() + TIMEOUT
            while len(replies) < i + 1:
                if time.monotonic() > deadline:
                    raise AssertionError("no RPC reply %d" % i)
                server_conn.process_data_events(time_limit=0.02)
                conn.process_data_events(time_limit=0.02)
            assert replies[i] == ("id%d" % i, ("pong:ping%d" % i).encode()), replies[i]
        sch.queue_delete(q)
        cch.close()
    finally:
        server_conn.close()


CHECKS = [check_publish_consume_ack, check_nack_requeue, check_confirms, check_confirm_nack,
          check_basic_get, check_rpc_direct_reply_to]


def main():
    failed = 0
    for check in CHECKS:
        name = check.__name__[len("check_"):]
        try:
            conn = connect()
            try:
                check(conn)
            finally:
                if conn.is_open:
                    conn.close()
            print("ok " + name, flush=True)
        except Exception as e:  # report every check, keep going
            failed += 1
            print("FAIL %s: %r" % (name, e), flush=True)
            traceback.print_exc(file=sys.stdout)
    print("pika checks: %d ok, %d failed" % (len(CHECKS) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
