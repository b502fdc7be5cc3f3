package integration

import (
	"testing"

	"github.com/go-stomp/stomp/v3"
)

// TestSTOMPWithMQTT: STOMP and MQTT meet on amq.topic, as in RabbitMQ: a STOMP SEND to
// /topic/a.b reaches an MQTT subscriber of a/b (and of a/+), and an MQTT publish to a/b
// reaches a STOMP subscriber of /topic/a.b with destination /topic/a.b.
func TestSTOMPWithMQTT(t *testing.T) {
	t.Parallel()
	stompAddr := freeAddr(t)
	_, mqttAddr := StartParleyMQTT(t, "--stomp", stompAddr)
	if ExternalURL() != "" {
		t.Skip("needs both listeners of one external broker; run with PARLEY_TEST_STOMP_ADDR in TestSTOMP* instead")
	}
	waitListening(t, stompAddr)
	base := Name(t, "t")
	m := mqtt3(t, mqttAddr, "stomp-x-"+base[len(base)-8:], true)
	fromSTOMP := sub3(t, m, base+"/+", 1)
	sc := stompDial(t, stompAddr)
	sub, err := sc.Subscribe("/topic/"+base+".fromMQTT", stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	syncReceipt(t, sc)

	if err := sc.Send("/topic/"+base+".fromSTOMP", "text/plain", []byte("stomp to mqtt"), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	got := next(t, fromSTOMP)
	if got.topic != base+"/fromSTOMP" || got.payload != "stomp to mqtt" {
		t.Fatalf("MQTT got %q on %q", got.payload, got.topic)
	}

	wait3(t, "publish", m.Publish(base+"/fromMQTT", 1, false, "mqtt to stomp"))
	msg := stompRecv(t, sub)
	if string(msg.Body) != "mqtt to stomp" || msg.Destination != "/topic/"+base+".fromMQTT" {
		t.Fatalf("STOMP got %q on %q", msg.Body, msg.Destination)
	}
}
