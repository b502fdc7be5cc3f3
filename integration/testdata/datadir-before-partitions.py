import time, paho.mqtt.client as mqtt, stomp
MQ=21883; ST=21613
def cl(cid, clean):
    try:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=clean)
    except AttributeError:
        c = mqtt.Client(client_id=cid, clean_session=clean)
    c.connect("127.0.0.1", MQ); c.loop_start(); time.sleep(0.3); return c
for i in range(5):
    c = cl("old-dev-%d" % i, False)
    r = c.subscribe("old/dev/%d" % i, qos=1); time.sleep(0.3)
    c.disconnect(); c.loop_stop()
p = cl("old-pub", True)
for i in range(5):
    for j in range(3):
        p.publish("old/dev/%d" % i, "old-%d-%d" % (i, j), qos=1).wait_for_publish()
p.disconnect(); p.loop_stop()
s = stomp.Connection([("127.0.0.1", ST)]); s.connect(wait=True)
s.subscribe("/topic/old.stomp", id="old-sub", ack="client-individual", headers={"durable":"true","auto-delete":"false"})
time.sleep(0.5); s.disconnect()
s = stomp.Connection([("127.0.0.1", ST)]); s.connect(wait=True)
for j in range(3):
    s.send("/topic/old.stomp", "stomp-%d" % j, headers={"persistent":"true","receipt":"r%d"%j})
time.sleep(0.5); s.disconnect()
print("ok")
