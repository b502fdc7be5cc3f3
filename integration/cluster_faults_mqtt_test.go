package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
)

// The MQTT side of TestClusterRandomFaults: a QoS 1 publisher and a device with a persistent
// session (clean session false), both reconnecting to another node when their connection ends,
// checked like the AMQP clients: every PUBACKed message reaches the device, nothing else does,
// and a message comes twice only with the DUP flag.

// faultMQTTOptions are a fault-test client's options: short keep-alive, so a connection stuck
// behind a cut link is given up in seconds; no automatic reconnection (the test picks the node).
func faultMQTTOptions(addr, id string, clean bool) *paho3.ClientOptions {
	return paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetUsername("guest").SetPassword("guest").SetCleanSession(clean).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(3 * time.Second).SetWriteTimeout(3 * time.Second).
		SetKeepAlive(2 * time.Second).SetPingTimeout(2 * time.Second).SetOrderMatters(false)
}

// faultMQTTPublish publishes QoS 1 messages, one in flight at a time, until ctx ends or the
// connection fails; PUBACKed ones go to the checker.
func faultMQTTPublish(ctx context.Context, addr, topic string, ck *faultChecker) {
	c := paho3.NewClient(faultMQTTOptions(addr, fmt.Sprintf("faults-pub-%d", time.Now().UnixNano()), true))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return
	}
	defer c.Disconnect(50)
	for ctx.Err() == nil && c.IsConnectionOpen() {
		seq := ck.take()
		payload := append(binary.BigEndian.AppendUint64(nil, seq), "mqtt-fault-payload"...)
		if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			return
		}
		ck.confirm(seq)
		time.Sleep(5 * time.Millisecond)
	}
}

// faultMQTTDevice connects the device's persistent session through addr (subscribing when
// subscribe is set, the first time) and records what it gets until ctx ends or the connection
// is lost.
func faultMQTTDevice(ctx context.Context, addr, id, topic string, subscribe bool, ck *faultChecker) error {
	lost := make(chan struct{})
	var once sync.Once
	o := faultMQTTOptions(addr, id, false).
		SetDefaultPublishHandler(func(_ paho3.Client, m paho3.Message) { ck.delivered(m.Payload(), m.Duplicate()) }).
		SetConnectionLostHandler(func(paho3.Client, error) { once.Do(func() { close(lost) }) })
	c := paho3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return fmt.Errorf("connect %s through %s: %v", id, addr, tok.Error())
	}
	if subscribe {
		tok := c.Subscribe(topic, 1, nil)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			c.Disconnect(0)
			return fmt.Errorf("subscribe %s: %v", topic, tok.Error())
		}
		c.Disconnect(50)
		return nil
	}
	select {
	case <-ctx.Done():
		c.Disconnect(50)
	case <-lost:
	}
	return nil
}

// setupFaultDevice gives the device its persistent session and subscription (bounded retries).
func setupFaultDevice(t testing.TB, n *Node, id, topic string, ck *faultChecker) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := faultMQTTDevice(context.Background(), n.MQTTAddr, id, topic, true, ck)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fault test's MQTT device: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// finalMQTTBatch publishes 10 QoS 1 messages through each node once the cluster is whole,
// retrying (bounded, under a new sequence number) a publish whose connection ended while the
// cluster settles.
func finalMQTTBatch(t testing.TB, nodes []*Node, topic string, ck *faultChecker) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range nodes {
		var p paho3.Client
		for i := 0; i < 10; {
			if time.Now().After(deadline) {
				t.Fatalf("node %d: final MQTT publishes not done within 60s of the repair (%d done)", n.ID, i)
			}
			if p == nil || !p.IsConnectionOpen() {
				p, _, _ = connect3(t, n.MQTTAddr, fmt.Sprintf("faults-final-%d-%d", n.ID, time.Now().UnixNano()), true)
			}
			seq := ck.take()
			payload := append(binary.BigEndian.AppendUint64(nil, seq), fmt.Sprintf("final-%d-%d", n.ID, i)...)
			if tok := p.Publish(topic, 1, false, payload); tok.WaitTimeout(mqttTimeout) && tok.Error() == nil {
				ck.confirm(seq)
				i++
				continue
			}
			t.Logf("node %d: final MQTT publish %d not acknowledged; again", n.ID, seq)
			p.Disconnect(0)
			p = nil
		}
		p.Disconnect(100)
	}
}
