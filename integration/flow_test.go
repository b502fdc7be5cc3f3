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
// subscriber (ack:auto) reads its socket slowly; once the subscriber's connection output is
// full, Parley stops reading the publisher until the queue is back to half of
// stomp_options.publish_flow_limit (500 here). The queue, watched over AMQP while the
// subscriber takes its first 1,500 messages, stays near the limit; without flow control it
// holds most of the 10,000 by then (the publisher is far faster). Then the subscriber reads
// at full speed, and every message arrives.
func TestFlowHoldsSTOMPPublisherForSlowConsumer(t *testing.T) {
	if ExternalURL() != "" {
		t.Skip("Parley's flow limit is set by its configuration file")
	}
	const limit, n, watched = 500, 10000, 1500
	s, addr := startSTOMP(t, "--config", writeConfig(t, "stomp_options:\n  publish_flow_limit: 500\n"))

	sub := dialRaw(t, addr)
	_ = sub.nc.SetDeadline(time.Now().Add(4 * time.Minute))
	// A small receive buffer, so that the kernel does not take megabytes for the subscriber
	// while it reads slowly.
	tcp := sub.nc.(*net.TCPConn)
	_ = tcp.SetReadBuffer(64 << 10)
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

	// The subscriber sleeps 5 ms every 16 messages (about 3,000 a second, 12 MB/s, on an idle
	// machine) until it has the watched ones, then reads as fast as it can.
	var got atomic.Int64
	readErr := make(chan error, 1)
	go func() {
		for got.Load() < n {
			if k := got.Load(); k < watched && k%16 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			f, err := sub.r.Read()
			if err != nil {
				readErr <- err
				return
			}
			if f != nil && f.Command == sframe.MESSAGE {
				if got.Add(1) == watched {
					_ = tcp.SetReadBuffer(4 << 20)
				}
			}
		}
		readErr <- nil
	}()

	ch := channel(t, dial(t, s))
	most := 0
	pubWait := pubDone // nil once the publisher is done
	for got.Load() < watched {
		select {
		case err := <-pubWait:
			if err != nil {
				t.Fatalf("SEND: %v", err)
			}
			pubWait = nil
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
	if err := <-readErr; err != nil {
		t.Fatalf("subscriber: after %d of %d messages: %v", got.Load(), n, err)
	}
	if pubWait != nil {
		if err := <-pubWait; err != nil {
			t.Fatalf("SEND: %v", err)
		}
	}
	t.Logf("most ready while the subscriber took its first %d: %d (limit %d)", watched, most, limit)
	if most > 4*limit {
		t.Fatalf("the queue held %d ready messages while the subscriber took its first %d: the publisher was not held back at %d", most, watched, limit)
	}
}
