package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"
	sframe "github.com/go-stomp/stomp/v3/frame"
)

// TestSTOMPBadInput: every kind of bad frame gets an ERROR frame with a clear message and
// closes only that connection; a client connected alongside keeps working and a message
// stored before is still there.
func TestSTOMPBadInput(t *testing.T) {
	t.Parallel()
	_, addr := startSTOMP(t, "--config", writeConfig(t, "stomp_options:\n  max_header_bytes: 1024\n  max_headers: 10\n  max_body: 2048\n  default_user: guest\n  default_pass: guest\n"))
	good := stompDial(t, addr)
	dest := "/queue/" + Name(t, "q")
	if err := good.Send(dest, "text/plain", []byte("kept"), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, frames, message, detail string
	}{
		{"header bytes", "SEND\ndestination:/queue/x\nbig:" + strings.Repeat("x", 2000) + "\n\n\x00", "Malformed frame", "exceed 1024 bytes"},
		{"header count", "SEND\n" + strings.Repeat("h:1\n", 11) + "\n\x00", "Malformed frame", "more than 10 headers"},
		{"body size", "SEND\ndestination:/queue/x\ncontent-length:4096\n\n", "Malformed frame", "maximum body size of 2048"},
		{"body size without content-length", "SEND\ndestination:/queue/x\n\n" + strings.Repeat("b", 3000) + "\x00", "Malformed frame", "maximum body size of 2048"},
		{"bad escape", "SEND\ndestination:/queue/x\nk:a\\tb\n\n\x00", "Malformed frame", "undefined escape \\t"},
		{"content-length lies", "SEND\ndestination:/queue/x\ncontent-length:2\n\nabcdef\x00", "Malformed frame", "content-length 2 is not followed by a NUL"},
		{"unknown command", "FROB\n\n\x00", "Bad command", "Could not interpret command \"FROB\""},
		{"garbage", "\x01\x02\x03\n\n\x00", "Malformed frame", "bad command line"},
		{"missing destination", "SEND\n\nx\x00", "Missing destination", "SEND must include a 'destination' header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, addr)
			r.connect("1.2")
			r.send(c.frames)
			r.expectError(c.message, c.detail)
		})
	}
	// Before CONNECT, only CONNECT is understood.
	r := dialRaw(t, addr)
	r.send("SEND\ndestination:/queue/x\n\n\x00")
	r.expectError("Illegal command", "You must log in using CONNECT first")
	// Wrong password, unknown vhost, no common version: RabbitMQ's texts.
	r = dialRaw(t, addr)
	r.send("CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:wrong\n\n\x00")
	r.expectError("Bad CONNECT", "Access refused for user 'guest'")
	r = dialRaw(t, addr)
	r.send("CONNECT\naccept-version:1.2\nhost:no-such-vhost\nlogin:guest\npasscode:guest\n\n\x00")
	r.expectError("Bad CONNECT", "Virtual host 'no-such-vhost' access denied")
	r = dialRaw(t, addr)
	r.send("CONNECT\naccept-version:2.0,3.1\n\n\x00")
	r.expectError("Version mismatch", "Supported versions are 1.0,1.1,1.2")

	// The well-behaved client was not affected and the stored message is intact.
	sub, err := good.Subscribe(dest, stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	if m := stompRecv(t, sub); string(m.Body) != "kept" {
		t.Fatalf("got %q", m.Body)
	}
}

// TestSTOMPTransactions: SEND and ACK inside BEGIN..COMMIT happen at COMMIT; ABORT drops them.
func TestSTOMPTransactions(t *testing.T) {
	t.Parallel()
	_, addr := startSTOMP(t)
	c := stompDial(t, addr)
	dest := "/queue/" + Name(t, "q")
	sub, err := c.Subscribe(dest, stomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.BeginWithError()
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Send(dest, "text/plain", []byte("in tx")); err != nil {
		t.Fatal(err)
	}
	syncReceipt(t, c)
	stompExpectNone(t, sub)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	m := stompRecv(t, sub)
	if string(m.Body) != "in tx" {
		t.Fatalf("got %q", m.Body)
	}
	// An ACK in an aborted transaction does not happen: the message comes back on reconnect.
	tx2, err := c.BeginWithError()
	if err != nil {
		t.Fatal(err)
	}
	if err := tx2.Ack(m); err != nil {
		t.Fatal(err)
	}
	tx3, err := c.BeginWithError()
	if err != nil {
		t.Fatal(err)
	}
	if err := tx3.Send(dest, "text/plain", []byte("aborted")); err != nil {
		t.Fatal(err)
	}
	if err := tx3.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := tx2.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	c2 := stompDial(t, addr)
	sub2, err := c2.Subscribe(dest, stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	if m := stompRecv(t, sub2); string(m.Body) != "in tx" || m.Header.Get("redelivered") != "true" {
		t.Fatalf("got %q redelivered=%q", m.Body, m.Header.Get("redelivered"))
	}
	stompExpectNone(t, sub2)
	// COMMIT of an unknown transaction is an ERROR.
	r := dialRaw(t, addr)
	r.connect("1.2")
	r.send("COMMIT\ntransaction:nope\n\n\x00")
	r.expectError("Bad transaction", "Invalid transaction identifier")
}

// TestSTOMPHeartBeats: the server sends heart-beats at the interval it announced, and closes a
// connection whose client stops sending them.
func TestSTOMPHeartBeats(t *testing.T) {
	t.Parallel()
	_, addr := startSTOMP(t)
	r := dialRaw(t, addr)
	r.send("CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:1000,1000\n\n\x00")
	f := r.read()
	if f.Command != sframe.CONNECTED || f.Header.Get(sframe.HeartBeat) != "1000,1000" {
		t.Fatalf("got %s %v", f.Command, f.Header)
	}
	// The server sends EOLs while idle; read raw bytes to see them.
	buf := make([]byte, 16)
	_ = r.nc.SetReadDeadline(time.Now().Add(waitTimeout))
	n, err := r.nc.Read(buf)
	if err != nil || n == 0 || buf[0] != '\n' {
		t.Fatalf("no heart-beat from the server: %q %v", buf[:n], err)
	}
	// We send nothing: the server gives up after twice the interval and closes.
	deadline := time.Now().Add(waitTimeout)
	for {
		_ = r.nc.SetReadDeadline(deadline)
		if _, err := r.nc.Read(buf); err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("server kept a silent connection open: %v", err)
			}
			break
		}
	}
	// A client that does send heart-beats stays connected past that.
	c := stompDial(t, addr, stomp.ConnOpt.HeartBeat(time.Second, time.Second))
	time.Sleep(3 * time.Second)
	if err := c.Send("/topic/x", "text/plain", nil, stomp.SendOpt.Receipt); err != nil {
		t.Fatalf("heart-beating client was dropped: %v", err)
	}
}

// TestSTOMPDurableTopicSubscription: a durable subscription keeps messages published while its
// subscriber is away, across a broker restart, and UNSUBSCRIBE durable:true removes it.
func TestSTOMPDurableTopicSubscription(t *testing.T) {
	t.Parallel()
	s, addr := startSTOMP(t)
	s.SkipIfExternal(t, "restarts the broker")
	key := Name(t, "k")
	durable := []func(*sframe.Frame) error{stomp.SubscribeOpt.Id("sub-1"), stomp.SubscribeOpt.Header("durable", "true"), stomp.SubscribeOpt.Header("auto-delete", "false")}
	c := stompDial(t, addr)
	if _, err := c.Subscribe("/topic/"+key, stomp.AckClientIndividual, durable...); err != nil {
		t.Fatal(err)
	}
	syncReceipt(t, c)
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	p := stompDial(t, addr)
	if err := p.Send("/topic/"+key, "text/plain", []byte("while away"), stomp.SendOpt.Receipt, stomp.SendOpt.Header("persistent", "true")); err != nil {
		t.Fatal(err)
	}
	_ = p.Disconnect()
	s.Restart()
	waitListening(t, addr)
	c2 := stompDial(t, addr)
	sub, err := c2.Subscribe("/topic/"+key, stomp.AckClientIndividual, durable...)
	if err != nil {
		t.Fatal(err)
	}
	m := stompRecv(t, sub)
	if string(m.Body) != "while away" {
		t.Fatalf("got %q", m.Body)
	}
	if err := c2.Ack(m); err != nil {
		t.Fatal(err)
	}
	if err := sub.Unsubscribe(stomp.SubscribeOpt.Header("durable", "true")); err != nil {
		t.Fatal(err)
	}
	syncReceipt(t, c2)
	// The queue is gone: a publish now reaches nobody, and a new durable subscription starts empty.
	p2 := stompDial(t, addr)
	if err := p2.Send("/topic/"+key, "text/plain", []byte("after"), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	sub3, err := c2.Subscribe("/topic/"+key, stomp.AckAuto, durable...)
	if err != nil {
		t.Fatal(err)
	}
	stompExpectNone(t, sub3)
}

// TestSTOMPTempQueueReplyTo: reply-to:/temp-queue/x gives the requester a private queue; the
// responder's reply (to the rewritten /reply-queue/ address) arrives on subscription
// /temp-queue/x without the requester subscribing.
func TestSTOMPTempQueueReplyTo(t *testing.T) {
	t.Parallel()
	_, addr := startSTOMP(t)
	service := "/queue/" + Name(t, "svc")
	responder := stompDial(t, addr)
	reqs, err := responder.Subscribe(service, stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	syncReceipt(t, responder)
	r := dialRaw(t, addr)
	r.connect("1.2")
	r.send("SEND\ndestination:" + service + "\nreply-to:/temp-queue/answers\n\nping\x00")
	req := stompRecv(t, reqs)
	replyTo := req.Header.Get("reply-to")
	if !strings.HasPrefix(replyTo, "/reply-queue/") {
		t.Fatalf("reply-to %q, want a /reply-queue/ address", replyTo)
	}
	if err := responder.Send(replyTo, "text/plain", []byte("pong"), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	f := r.read()
	if f.Command != sframe.MESSAGE || string(f.Body) != "pong" || f.Header.Get(sframe.Subscription) != "/temp-queue/answers" {
		t.Fatalf("got %s %v %q", f.Command, f.Header, f.Body)
	}
}

// TestSTOMPQueueArguments: x- headers on the first SEND declare the queue with those
// arguments (here x-max-length 2: the oldest is dropped), as RabbitMQ's plugin does.
func TestSTOMPQueueArguments(t *testing.T) {
	t.Parallel()
	s, addr := startSTOMP(t)
	q := Name(t, "q")
	cleanupQueue(t, s, q)
	c := stompDial(t, addr)
	for i := 0; i < 3; i++ {
		if err := c.Send("/queue/"+q, "text/plain", []byte(fmt.Sprint(i)), stomp.SendOpt.Receipt,
			stomp.SendOpt.Header("x-max-length", "2"), stomp.SendOpt.Header("x-message-ttl", "60000")); err != nil {
			t.Fatal(err)
		}
	}
	ch := channel(t, dial(t, s))
	if got := recvBodies(t, consume(t, ch, q, "", true, nil), 2); !equalStrings(got, []string{"1", "2"}) {
		t.Fatalf("got %v, want [1 2] (x-max-length 2)", got)
	}
	// Declaring it again with other arguments is inequivalent, as for AMQP.
	r := dialRaw(t, addr)
	r.connect("1.2")
	r.send("SUBSCRIBE\nid:0\ndestination:/queue/" + q + "\nx-max-length:5\n\n\x00")
	r.expectError("precondition_failed", "inequivalent arg")
}
