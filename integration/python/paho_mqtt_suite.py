#!/usr/bin/python3
"""Parley's Eclipse paho-mqtt checks (Debian python3-paho-mqtt), run by integration/mqtt_clients_test.go.

Usage: paho_mqtt_suite.py HOST PORT NAME_PREFIX
Prints one line per check, then "paho-mqtt checks: N ok, M failed". Every wait is bounded.
"""
import queue
import sys
import traceback

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT = 10
HOST, PORT, PREFIX = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Client:
    """A connected client whose messages go to a queue the checks read with timeouts."""

    def __init__(self, name, protocol=mqtt.MQTTv311, password="guest", will=None):
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.c = mqtt.Client(client_id=PREFIX + name, protocol=protocol)
        self.c.username_pw_set("guest", password)
        if will:
            self.c.will_set(**will)
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        if protocol == mqtt.MQTTv5:
            self.c.on_connect = lambda c, u, f, rc, p=None: self.connacks.put(rc)
        else:
            self.c.on_connect = lambda c, u, f, rc: self.connacks.put(rc)
        self.c.connect(HOST, PORT, keepalive=30)
        self.c.loop_start()
        self.rc = self.connacks.get(timeout=TIMEOUT)

    def subscribe(self, topic, qos):
        done = queue.Queue()
        self.c.on_subscribe = lambda *a: done.put(True)
        self.c.subscribe(topic, qos)
        done.get(timeout=TIMEOUT)

    def message(self):
        try:
            return self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("no message within %ds" % TIMEOUT)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def check_qos1_roundtrip():
    sub = Client("sub311")
    assert sub.rc == 0, sub.rc
    sub.subscribe("py/+/t", 1)
    pub = Client("pub311")
    pub.c.publish("py/a/t", b"hello", qos=1).wait_for_publish(TIMEOUT)
    m = sub.message()
    assert m.topic == "py/a/t" and m.payload == b"hello" and m.qos == 1, (m.topic, m.payload, m.qos)
    sub.close()
    pub.close()


def check_qos2_roundtrip():
    sub = Client("sub311q2")
    sub.subscribe("py/q2", 2)
    pub = Client("pub311q2")
    for i in range(5):
        pub.c.publish("py/q2", str(i).encode(), qos=2).wait_for_publish(TIMEOUT)
    got = sorted(sub.message().payload for _ in range(5))
    assert got == [b"0", b"1", b"2", b"3", b"4"], got
    try:
        extra = sub.messages.get(timeout=0.3)
        raise AssertionError("duplicate delivery %r" % extra.payload)
    except queue.Empty:
        pass
    sub.close()
    pub.close()


def check_v5_user_properties():
    sub = Client("sub5", mqtt.MQTTv5)
    sub.subscribe("py/five", 1)
    pub = Client("pub5", mqtt.MQTTv5)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("colour", "green")]
    props.ContentType = "text/plain"
    pub.c.publish("py/five", b"five", qos=1, properties=props).wait_for_publish(TIMEOUT)
    m = sub.message()
    user = dict(getattr(m.properties, "UserProperty", []))
    assert m.payload == b"five" and user.get("colour") == "green", (m.payload, user)
    assert getattr(m.properties, "ContentType", None) == "text/plain"
    sub.close()
    pub.close()


def check_v5_will_properties():
    """An MQTT 5 will keeps its properties through the core [MQTT-3.1.3-10]."""
    watcher = Client("willwatch", mqtt.MQTTv5)
    watcher.subscribe("py/will/#", 1)
    props = Properties(PacketTypes.WILLMESSAGE)
    props.ContentType = "application/json"
    props.ResponseTopic = "py/replies"
    props.CorrelationData = b"corr-1"
    props.MessageExpiryInterval = 3600
    props.PayloadFormatIndicator = 1
    props.UserProperty = [("site", "north")]
    mortal = Client("willmortal", mqtt.MQTTv5,
                    will={"topic": "py/will/gone", "payload": b'{"gone":true}', "qos": 1, "properties": props})
    assert mortal.rc == 0, mortal.rc
    mortal.c.loop_stop()
    mortal.c.socket().close()  # no DISCONNECT: the will goes
    m = watcher.message()
    p = m.properties
    assert m.topic == "py/will/gone" and m.payload == b'{"gone":true}', (m.topic, m.payload)
    assert getattr(p, "ContentType", None) == "application/json", vars(p)
    assert getattr(p, "ResponseTopic", None) == "py/replies", vars(p)
    assert getattr(p, "CorrelationData", None) == b"corr-1", vars(p)
    assert getattr(p, "PayloadFormatIndicator", None) == 1, vars(p)
    assert 0 < getattr(p, "MessageExpiryInterval", 0) <= 3600, vars(p)
    assert dict(getattr(p, "UserProperty", [])).get("site") == "north", vars(p)
    watcher.close()


def check_retained():
    pub = Client("retpub")
    pub.c.publish("py/retained", b"kept", qos=1, retain=True).wait_for_publish(TIMEOUT)
    sub = Client("retsub")
    sub.subscribe("py/#", 1)
    m = sub.message()
    assert m.topic == "py/retained" and m.payload == b"kept" and m.retain, (m.topic, m.payload, m.retain)
    pub.c.publish("py/retained", b"", qos=1, retain=True).wait_for_publish(TIMEOUT)
    sub.close()
    pub.close()


def check_bad_password():
    c = Client("bad", password="wrong")
    assert c.rc == 4, "CONNACK %r, want 4 bad user name or password" % c.rc
    c.c.loop_stop()


CHECKS = [check_qos1_roundtrip, check_qos2_roundtrip, check_v5_user_properties, check_v5_will_properties,
          check_retained, check_bad_password]

ok = failed = 0
for check in CHECKS:
    try:
        check()
        print("ok     " + check.__name__)
        ok += 1
    except Exception:
        print("FAILED " + check.__name__)
        traceback.print_exc()
        failed += 1
print("paho-mqtt checks: %d ok, %d failed" % (ok, failed))
sys.exit(1 if failed else 0)
