package integration

import (
	"bytes"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"
	sframe "github.com/go-stomp/stomp/v3/frame"
)

// TestFlowHoldsSTOMPPublisherForSlowConsumer: publisher flow control with STOMP on both sides.
// A go-stomp client SENDs 10,000 4 KB messages as fast as it can to a queue whose one
// subscriber (ack:auto) reads its socket at about 12 MB/s; once the subscriber's connection
// output is full, Parley stops reading the publisher until the queue is back to half of
// stomp_options.publish_flow_limit (500 here). The queue, watched over AMQP, stays near the
// limit instead of taking most of what was sent, and every message arrives.
func TestFlowHoldsSTOMPPublisherForSlowConsumer(t *testing.T) {
	if ExternalURL() != "" {
		t.Skip("Parley's flow limit is set by its configuration file")
	}
	const limit, n = 500, 10000
	s, addr := startSTOMP(t, "--config", writeConfig(t, "stomp_options:\n  publish_flow_limit: 500\n"))

	sub := dialRaw(t, addr)
	_ = sub.nc.SetDeadline(time.Now().Add(90 * time.Second))
	// A small receive buffer, so that the kernel does not take megabytes for the subscriber.
	_ = sub.nc.(*net.TCPConn).SetReadBuffer(16 << 10)
	sub.connect("1.2")
	sub.send("SUBSCRIBE\nid:0\ndestination:/queue/flow-stomp\nack:auto\nreceipt:r\n\n\x00")
	if f := sub.read(); f.Command != sframe.RECEIPT {
		t.Fatalf("SUBSCRIBE: got %s %v", f.Command, f.Header)
	}

	pub := stompDial(t, addr)
	body := bytes.Repeat([]byte("s"), 4096)
	pubDone := make(chan error, 1)
	go func() {
		for range n {
			if err := pub.Send("/queue/flow-stomp", "text/plain", body, stomp.SendOpt.NoContentLength); err != nil {
				pubDone <- err
				return
			}
		}
		pubDone <- nil
	}()

	var got atomic.Int64
	var slow atomic.Bool
	slow.Store(true)
	readErr := make(chan error, 1)
	go func() {
		for got.Load() < n {
			if slow.Load() && got.Load()%16 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			f, err := sub.r.Read()
			if err != nil {
				readErr <- err
				return
			}
			if f != nil && f.Command == sframe.MESSAGE {
				got.Add(1)
			}
		}
		readErr <- nil
	}()

	ch := channel(t, dial(t, s))
	most := 0
	for published := false; !published; {
		select {
		case err := <-pubDone:
			if err != nil {
				t.Fatalf("SEND: %v", err)
			}
			published = true
		case err := <-readErr:
			t.Fatalf("subscriber stopped early after %d messages: %v", got.Load(), err)
		case <-time.After(2 * time.Millisecond):
		}
		q, err := ch.QueueDeclarePassive("flow-stomp", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, q.Messages)
	}
	slow.Store(false)
	if err := <-readErr; err != nil {
		t.Fatalf("subscriber: after %d of %d messages: %v", got.Load(), n, err)
	}
	t.Logf("most ready while publishing: %d (limit %d)", most, limit)
	if most > 4*limit {
		t.Fatalf("the queue held %d ready messages while the publisher sent: not held back at %d", most, limit)
	}
}
