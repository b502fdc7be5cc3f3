package mqtt

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/auth"
)

// The tests here drive Parley's own connection loop (conn.go) with raw clients over loopback,
// for what the loop does itself: several packets in one read, keep-alive, take-over, the
// maximum packet size, inbound topic aliases and receive maximum, and what an idle connection
// keeps.

const rawTimeout = 10 * time.Second

func startServer(t *testing.T, cfg Config) string {
	t.Helper()
	log := zap.NewNop()
	b, err := broker.New(log, broker.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(cfg, b, auth.DefaultStore(), log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { s.Close(); b.Close() })
	return ln.Addr().String()
}

// rawClient is an MQTT client that writes the packets it is given and reads packets back,
// decoded with the server's own decoder.
type rawClient struct {
	t       *testing.T
	c       net.Conn
	version byte
}

func dialRaw(t *testing.T, addr string, version byte, pks ...packets.Packet) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(rawTimeout))
	r := &rawClient{t: t, c: c, version: version}
	r.send(pks...)
	return r
}

// send writes the packets in one write, so they reach the server together.
func (r *rawClient) send(pks ...packets.Packet) {
	r.t.Helper()
	if len(pks) == 0 {
		return
	}
	if _, err := r.c.Write(encode(r.t, r.version, pks...)); err != nil {
		r.t.Fatal(err)
	}
}

// read returns the next packet, or the error that ended the stream.
func (r *rawClient) read() (packets.Packet, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r.c, hdr[:1]); err != nil {
		return packets.Packet{}, err
	}
	n, remaining := 1, 0
	for i := 0; ; i++ {
		if _, err := io.ReadFull(r.c, hdr[n:n+1]); err != nil {
			return packets.Packet{}, err
		}
		remaining |= int(hdr[n]&0x7F) << (7 * i)
		n++
		if hdr[n-1]&0x80 == 0 {
			break
		}
	}
	raw := make([]byte, n+remaining)
	copy(raw, hdr[:n])
	if _, err := io.ReadFull(r.c, raw[n:]); err != nil {
		return packets.Packet{}, err
	}
	return decodePacket(r.version, raw)
}

func (r *rawClient) expect(typ byte) packets.Packet {
	r.t.Helper()
	pk, err := r.read()
	if err != nil {
		r.t.Fatalf("waiting for packet type %d: %v", typ, err)
	}
	if pk.FixedHeader.Type != typ {
		r.t.Fatalf("got packet type %d (reason 0x%02x), want %d", pk.FixedHeader.Type, pk.ReasonCode, typ)
	}
	return pk
}

// expectClosed reads until the server closes the connection; it must not time out.
func (r *rawClient) expectClosed() []packets.Packet {
	r.t.Helper()
	var got []packets.Packet
	for {
		pk, err := r.read()
		if err == nil {
			got = append(got, pk)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			r.t.Fatalf("the server did not close the connection (got %d packets)", len(got))
		}
		return got
	}
}

func connect(version byte, id string, configure ...func(*packets.Packet)) packets.Packet {
	pk := connectPacket(version, id)
	for _, f := range configure {
		f(&pk)
	}
	return pk
}

func subscribe(id uint16, filter string, qos byte) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: id,
		Filters: packets.Subscriptions{{Filter: filter, Qos: qos}}}
}

func publish(id uint16, qos byte, topic, payload string) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: id,
		TopicName: topic, Payload: []byte(payload)}
}

var pingreq = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}

// Packets that arrive in one read are handled one after the other, in order, and each
// answered: CONNACK, SUBACK, PUBACK, the delivery, PINGRESP.
func TestConnPipelinedPackets(t *testing.T) {
	addr := startServer(t, DefaultConfig())
	for _, v := range []byte{4, 5} {
		c := dialRaw(t, addr, v, connect(v, "pipe"), subscribe(1, "pipe/+", 1),
			publish(2, 1, "pipe/a", "one"), pingreq)
		if ack := c.expect(packets.Connack); ack.ReasonCode != 0 {
			t.Fatalf("v%d: CONNACK 0x%02x", v, ack.ReasonCode)
		}
		if sub := c.expect(packets.Suback); sub.PacketID != 1 || len(sub.ReasonCodes) != 1 || sub.ReasonCodes[0] != 1 {
			t.Fatalf("v%d: SUBACK %+v", v, sub)
		}
		var puback, delivered, pong bool
		for !(puback && delivered && pong) {
			pk, err := c.read()
			if err != nil {
				t.Fatalf("v%d: %v (PUBACK %v, delivery %v, PINGRESP %v)", v, err, puback, delivered, pong)
			}
			switch pk.FixedHeader.Type {
			case packets.Puback:
				puback = pk.PacketID == 2
			case packets.Publish:
				delivered = pk.TopicName == "pipe/a" && string(pk.Payload) == "one"
				c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
			case packets.Pingresp:
				pong = true
			}
		}
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		c.expectClosed()
	}
}

// A client silent for one and a half keep-alive periods is disconnected [MQTT-3.1.2-22], and
// its will is published; PINGREQs keep it alive until then.
func TestConnKeepAliveExpiry(t *testing.T) {
	addr := startServer(t, DefaultConfig())
	watcher := dialRaw(t, addr, 4, connect(4, "ka-watch"), subscribe(1, "ka/will", 0))
	watcher.expect(packets.Connack)
	watcher.expect(packets.Suback)
	c := dialRaw(t, addr, 4, connect(4, "ka-client", func(pk *packets.Packet) {
		pk.Connect.Keepalive = 1
		pk.Connect.WillFlag = true
		pk.Connect.WillTopic = "ka/will"
		pk.Connect.WillPayload = []byte("gone")
	}))
	c.expect(packets.Connack)
	for range 3 { // each well within 1.5 s of the previous packet
		time.Sleep(300 * time.Millisecond)
		c.send(pingreq)
		c.expect(packets.Pingresp)
	}
	c.expectClosed() // now silent
	will := watcher.expect(packets.Publish)
	if will.TopicName != "ka/will" || string(will.Payload) != "gone" {
		t.Fatalf("will %q %q", will.TopicName, will.Payload)
	}
}

// A socket that sends no CONNECT is closed after the connect timeout, and a connection with
// keep-alive 0 that did connect stays open past it.
func TestConnConnectTimeout(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ConnectTimeout = 300 * time.Millisecond
	addr := startServer(t, cfg)
	silent := dialRaw(t, addr, 4)
	quiet := dialRaw(t, addr, 4, connect(4, "ct-quiet", func(pk *packets.Packet) { pk.Connect.Keepalive = 0 }))
	quiet.expect(packets.Connack)
	if got := silent.expectClosed(); len(got) != 0 {
		t.Fatalf("a connection without CONNECT got %+v", got)
	}
	time.Sleep(2 * cfg.ConnectTimeout)
	quiet.send(pingreq)
	quiet.expect(packets.Pingresp)
}

// A second connection with the same client id takes the session over: an MQTT 5 connection
// taken over gets DISCONNECT 0x8E and is closed [MQTT-3.1.4-3], an MQTT 3.1.1 one is closed;
// the new one finds the session (session present) and its subscriptions.
func TestConnTakeover(t *testing.T) {
	addr := startServer(t, DefaultConfig())
	for _, v := range []byte{4, 5} {
		id := "take-" + string('0'+v)
		persistent := func(pk *packets.Packet) {
			pk.Connect.Clean = false
			if v == 5 {
				pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 60, true
			}
		}
		old := dialRaw(t, addr, v, connect(v, id, persistent), subscribe(1, "take/#", 1))
		if ack := old.expect(packets.Connack); ack.SessionPresent {
			t.Fatalf("v%d: a new session is present", v)
		}
		old.expect(packets.Suback)

		nu := dialRaw(t, addr, v, connect(v, id, persistent))
		if ack := nu.expect(packets.Connack); ack.ReasonCode != 0 || !ack.SessionPresent {
			t.Fatalf("v%d: CONNACK 0x%02x, session present %v", v, ack.ReasonCode, ack.SessionPresent)
		}
		got := old.expectClosed()
		if v == 5 {
			if len(got) != 1 || got[0].FixedHeader.Type != packets.Disconnect || got[0].ReasonCode != packets.ErrSessionTakenOver.Code {
				t.Fatalf("taken-over MQTT 5 connection got %+v, want DISCONNECT 0x8E", got)
			}
		} else if len(got) != 0 {
			// MQTT 3.1.1 has DISCONNECT only from client to server.
			t.Fatalf("taken-over MQTT 3.1.1 connection got %+v, want a close and no packet", got)
		}

		p := dialRaw(t, addr, 4, connect(4, "take-pub"), publish(1, 1, "take/x", "after"))
		p.expect(packets.Connack)
		p.expect(packets.Puback)
		m := nu.expect(packets.Publish)
		if m.TopicName != "take/x" || string(m.Payload) != "after" {
			t.Fatalf("v%d: delivered %q %q", v, m.TopicName, m.Payload)
		}
		nu.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: m.PacketID},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		nu.expectClosed()
	}
}

// A packet over the maximum packet size ends that connection, with DISCONNECT 0x95 for an
// MQTT 5 client [MQTT-3.1.2-24], also when it arrives in the same read as packets before it
// (which are answered); other connections go on.
func TestConnPacketOverMaximumSize(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxPacketSize = 1024
	addr := startServer(t, cfg)
	for _, v := range []byte{4, 5} {
		big := strings.Repeat("x", 2000)
		c := dialRaw(t, addr, v, connect(v, "big"), pingreq, publish(1, 1, "big/t", big), pingreq)
		ack := c.expect(packets.Connack)
		if v == 5 && ack.Properties.MaximumPacketSize != 1024 {
			t.Fatalf("CONNACK maximum packet size %d", ack.Properties.MaximumPacketSize)
		}
		c.expect(packets.Pingresp)
		got := c.expectClosed()
		if v == 5 && (len(got) != 1 || got[0].FixedHeader.Type != packets.Disconnect || got[0].ReasonCode != packets.ErrPacketTooLarge.Code) {
			t.Fatalf("MQTT 5: got %+v, want DISCONNECT 0x95", got)
		}
		if v == 4 && len(got) != 0 {
			t.Fatalf("MQTT 3.1.1: got %+v after the over-size packet", got)
		}
	}
	ok := dialRaw(t, addr, 5, connect(5, "small"), publish(1, 1, "big/t", "small"))
	ok.expect(packets.Connack)
	ok.expect(packets.Puback)
}

// Inbound topic aliases [MQTT-3.3.2-12]: a PUBLISH that sets alias 1 and one that uses it with
// an empty topic reach the subscriber under the topic.
func TestConnInboundTopicAlias(t *testing.T) {
	addr := startServer(t, DefaultConfig())
	sub := dialRaw(t, addr, 5, connect(5, "alias-sub"), subscribe(1, "alias/#", 0))
	sub.expect(packets.Connack)
	sub.expect(packets.Suback)
	first := publish(1, 1, "alias/x", "one")
	first.Properties.TopicAlias, first.Properties.TopicAliasFlag = 1, true
	second := publish(2, 1, "", "two")
	second.Properties.TopicAlias, second.Properties.TopicAliasFlag = 1, true
	p := dialRaw(t, addr, 5, connect(5, "alias-pub"), first, second)
	p.expect(packets.Connack)
	p.expect(packets.Puback)
	p.expect(packets.Puback)
	for _, want := range []string{"one", "two"} {
		m := sub.expect(packets.Publish)
		if m.TopicName != "alias/x" || string(m.Payload) != want {
			t.Fatalf("delivered %q %q, want alias/x %q", m.TopicName, m.Payload, want)
		}
	}
}

// The server's receive maximum: a client may have that many QoS 2 publishes waiting for
// PUBREL; PUBREL gives the quota back, and one more publish over it gets DISCONNECT 0x93
// [MQTT-3.3.4-8] (mochi's handling, which the loop keeps).
func TestConnReceiveMaximumInbound(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ReceiveMaximum = 2
	addr := startServer(t, cfg)
	pubrel := func(id uint16) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id}
	}
	c := dialRaw(t, addr, 5, connect(5, "recvmax"), publish(1, 2, "rm/t", "1"), publish(2, 2, "rm/t", "2"))
	if ack := c.expect(packets.Connack); ack.Properties.ReceiveMaximum != 2 {
		t.Fatalf("CONNACK receive maximum %d", ack.Properties.ReceiveMaximum)
	}
	c.expect(packets.Pubrec)
	c.expect(packets.Pubrec)
	c.send(pubrel(1))
	if pk := c.expect(packets.Pubcomp); pk.PacketID != 1 {
		t.Fatalf("PUBCOMP for %d", pk.PacketID)
	}
	c.send(publish(3, 2, "rm/t", "3"))
	if pk := c.expect(packets.Pubrec); pk.PacketID != 3 {
		t.Fatalf("PUBREC for %d", pk.PacketID)
	}
	c.send(publish(4, 2, "rm/t", "4"))
	got := c.expectClosed()
	if len(got) != 1 || got[0].FixedHeader.Type != packets.Disconnect || got[0].ReasonCode != packets.ErrReceiveMaximum.Code {
		t.Fatalf("over the receive maximum: got %+v, want DISCONNECT 0x93", got)
	}
}

// An idle connection keeps one goroutine, waiting in guardConn for the next packet with
// nothing of mochi's on its stack: no reader deep in mochi's frames, no write loop (issue 4,
// docs/performance.md "Idle MQTT connection").
func TestIdleConnectionKeepsOneShallowGoroutine(t *testing.T) {
	addr := startServer(t, DefaultConfig())
	const n = 20
	for i := range n {
		v := byte(4 + i%2)
		c := dialRaw(t, addr, v, connect(v, "idle-"+itoa(i)), subscribe(1, "idle/"+itoa(i), 1), pingreq)
		c.expect(packets.Connack)
		c.expect(packets.Suback)
		c.expect(packets.Pingresp)
	}
	deadline := time.Now().Add(rawTimeout)
	for {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
		serving, mochi, deep := 0, 0, 0
		for _, g := range strings.Split(buf.String(), "\n\n") {
			if strings.Contains(g, "mqtt.(*conn).serve") {
				serving++
				if !strings.Contains(g, "guardConn).fill") {
					deep++ // not waiting for bytes: still handling a packet
				}
			}
			if strings.Contains(g, "mochi-mqtt/server") {
				mochi++
			}
			if strings.Contains(g, "mqtt.(*conn).runDeep") {
				deep++
			}
		}
		if serving == n && mochi == 0 && deep == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle connections: %d serving goroutines (want %d), %d goroutines in mochi's code, %d still handling a packet\n%s",
				n, serving, n, mochi, deep, buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
