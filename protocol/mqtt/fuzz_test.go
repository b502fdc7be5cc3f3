package mqtt

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/auth"
)

// encode builds packets with mochi's encoder for the seed corpus.
func encode(t testing.TB, version byte, pks ...packets.Packet) []byte {
	var out bytes.Buffer
	for _, pk := range pks {
		pk.ProtocolVersion = version
		var err error
		switch pk.FixedHeader.Type {
		case packets.Connect:
			err = pk.ConnectEncode(&out)
		case packets.Publish:
			err = pk.PublishEncode(&out)
		case packets.Subscribe:
			err = pk.SubscribeEncode(&out)
		case packets.Unsubscribe:
			err = pk.UnsubscribeEncode(&out)
		case packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp:
			err = pk.PubackEncode(&out)
		case packets.Disconnect:
			err = pk.DisconnectEncode(&out)
		case packets.Pingreq:
			err = pk.PingreqEncode(&out)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

func connectPacket(version byte, id string) packets.Packet {
	name := []byte("MQTT")
	if version == 3 {
		name = []byte("MQIsdp")
	}
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: name, ClientIdentifier: id, Clean: true, Keepalive: 30,
			UsernameFlag: true, Username: []byte("guest"), PasswordFlag: true, Password: []byte("guest")}}
}

// FuzzConnection feeds arbitrary bytes to a live MQTT listener, as the first bytes of a
// connection (the seeds start with a valid CONNECT, so the fuzzer also reaches the packets
// after it). Whatever arrives, the server must not panic (a recovered panic is logged at error
// level, which fails the run) and must still serve the next client.
func FuzzConnection(f *testing.F) {
	core, logs := observer.New(zap.ErrorLevel)
	log := zap.New(core)
	b, err := broker.New(log, broker.DefaultConfig())
	if err != nil {
		f.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MaxPacketSize = 64 << 10
	s := NewServer(cfg, b, auth.DefaultStore(), log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	f.Cleanup(func() { s.Close(); b.Close() })

	for _, v := range []byte{4, 5} {
		f.Add(encode(f, v, connectPacket(v, "fz"),
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
				Filters: packets.Subscriptions{{Filter: "a/+/c", Qos: 2}, {Filter: "$share/g/x/#", Qos: 1}}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 2,
				TopicName: "a/b/c", Payload: []byte("hi")},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 3,
				TopicName: "a/b/c", Payload: []byte("two")},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 3},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 1},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 4,
				Filters: packets.Subscriptions{{Filter: "a/+/c"}}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}}))
	}
	f.Add(encode(f, 3, connectPacket(3, "old")))
	f.Add([]byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F})
	f.Add([]byte{0x30, 0x00})
	good := encode(f, 4, connectPacket(4, "after"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(data)
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c) // until the server closes it
		c.Close()
		if n := logs.FilterMessageSnippet("panic").Len(); n > 0 {
			t.Fatalf("server panicked: %v", logs.All()[0].ContextMap())
		}
		// The listener still serves: a valid CONNECT gets CONNACK accepted.
		c2, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c2.Write(good); err != nil {
			t.Fatal(err)
		}
		ack := make([]byte, 4)
		if _, err := io.ReadFull(c2, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			t.Fatalf("CONNACK after fuzz input: % x %v", ack, err)
		}
	})
}

// FuzzDecodePacket runs the connection loop's decode path on arbitrary bytes: guardConn frames
// (and refuses what mochi's decoders must not see), decodePacket decodes with mochi's decoders
// as the protocol version says. Nothing may panic; a packet decoded from a whole frame is the
// frame (no bytes read past it).
func FuzzDecodePacket(f *testing.F) {
	for _, v := range []byte{4, 5} {
		f.Add(v, encode(f, v, connectPacket(v, "fz"),
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
				Filters: packets.Subscriptions{{Filter: "a/+/c", Qos: 2, NoLocal: true}}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 2,
				TopicName: "a/b/c", Payload: []byte("hi"),
				Properties: packets.Properties{TopicAlias: 1, TopicAliasFlag: true, User: []packets.UserProperty{{Key: "k", Val: "v"}}}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 3},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 4,
				Filters: packets.Subscriptions{{Filter: "a/+/c"}}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}}))
	}
	f.Add(byte(5), []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 'a'})
	f.Add(byte(5), []byte{0xF0, 0x02, 0x00, 0x00})
	f.Add(byte(4), []byte{0x62, 0x02, 0x00, 0x01})
	f.Add(byte(3), []byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F})
	f.Fuzz(func(t *testing.T, version byte, data []byte) {
		g := newGuardConn(&chunkConn{data: data, sizes: []int{7, 64, 4096}}, 64<<10)
		g.version = version // as a CONNECT in data would set it
		for range len(data) + 1 {
			if err := g.next(); err != nil {
				return
			}
			raw := g.pending
			g.pending = nil
			pk, err := decodePacket(g.version, raw)
			if err != nil {
				continue // the loop ends the connection
			}
			if pk.FixedHeader.Remaining > len(raw) {
				t.Fatalf("decoded a body of %d bytes from a packet of %d", pk.FixedHeader.Remaining, len(raw))
			}
		}
	})
}
