package amqp091

import (
	"bytes"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parleymq/parley/protocol/amqp091/wire"
)

// rawClient speaks AMQP frame by frame, for the error paths real clients never take.
type rawClient struct {
	t  testing.TB
	nc net.Conn
	r  *wire.Reader
}

func rawDial(t testing.TB, url string) *rawClient {
	t.Helper()
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "amqp://guest:guest@"), "/")
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	t.Cleanup(func() { _ = nc.Close() })
	return &rawClient{t: t, nc: nc, r: wire.NewReader(nc, 0)}
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) method(ch uint16, m wire.Method) {
	c.t.Helper()
	c.write(wire.AppendMethodFrame(nil, ch, m))
}

// next returns the next method, skipping heartbeats; nil at EOF.
func (c *rawClient) next() wire.Method {
	c.t.Helper()
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			return nil
		}
		if f.Type != wire.FrameMethod {
			continue
		}
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			c.t.Fatalf("decode: %v", err)
		}
		return m
	}
}

// open runs the handshake as a client with every capability, and opens channel 1.
func (c *rawClient) open(password string) {
	c.t.Helper()
	c.openHeartbeat(password, 0)
}

// openHeartbeat is open with a heartbeat interval in seconds (0: none).
func (c *rawClient) openHeartbeat(password string, heartbeat uint16) {
	c.t.Helper()
	c.write(wire.ProtocolHeader)
	if _, ok := c.next().(*wire.ConnectionStart); !ok {
		c.t.Fatal("no connection.start")
	}
	caps := wire.Table{"authentication_failure_close": true, "consumer_cancel_notify": true, "connection.blocked": true}
	c.method(0, &wire.ConnectionStartOk{
		ClientProperties: wire.Table{"capabilities": caps}, Mechanism: "PLAIN",
		Response: []byte("\x00guest\x00" + password), Locale: "en_US",
	})
	m := c.next()
	if _, ok := m.(*wire.ConnectionTune); !ok {
		c.t.Fatalf("got %v, want connection.tune", m)
	}
	c.method(0, &wire.ConnectionTuneOk{ChannelMax: 2047, FrameMax: 131072, Heartbeat: heartbeat})
	c.method(0, &wire.ConnectionOpen{VirtualHost: "/"})
	if _, ok := c.next().(*wire.ConnectionOpenOk); !ok {
		c.t.Fatal("no open-ok")
	}
	c.method(1, &wire.ChannelOpen{})
	if _, ok := c.next().(*wire.ChannelOpenOk); !ok {
		c.t.Fatal("no channel.open-ok")
	}
}

// expectConnClose reads until connection.close and checks it, answers close-ok, and expects EOF.
func (c *rawClient) expectConnClose(code uint16, text string, classID, methodID uint16) {
	c.t.Helper()
	for {
		m := c.next()
		if m == nil {
			c.t.Fatalf("EOF before connection.close %d", code)
		}
		cl, ok := m.(*wire.ConnectionClose)
		if !ok {
			continue
		}
		if cl.ReplyCode != code || cl.ReplyText != text || cl.ClassId != classID || cl.MethodId != methodID {
			c.t.Fatalf("connection.close %d %q %d/%d; want %d %q %d/%d",
				cl.ReplyCode, cl.ReplyText, cl.ClassId, cl.MethodId, code, text, classID, methodID)
		}
		c.method(0, &wire.ConnectionCloseOk{})
		c.expectEOF()
		return
	}
}

func (c *rawClient) expectEOF() {
	c.t.Helper()
	for {
		if _, err := c.r.ReadFrame(); err != nil {
			return
		}
	}
}

func TestRawBadProtocolHeader(t *testing.T) {
	url, _ := testServer(t)
	c := rawDial(t, url)
	c.write([]byte("AMQP\x00\x00\x08\x00"))
	got, _ := io.ReadAll(c.nc)
	if !bytes.Equal(got, []byte("AMQP\x00\x00\x09\x01")) {
		t.Fatalf("got %q", got)
	}
}

func TestRawAuthFailureClose(t *testing.T) {
	url, _ := testServer(t)
	c := rawDial(t, url)
	c.write(wire.ProtocolHeader)
	c.next()
	c.method(0, &wire.ConnectionStartOk{
		ClientProperties: wire.Table{"capabilities": wire.Table{"authentication_failure_close": true}},
		Mechanism:        "PLAIN", Response: []byte("\x00guest\x00nope"), Locale: "en_US",
	})
	m, ok := c.next().(*wire.ConnectionClose)
	if !ok || m.ReplyCode != 403 || m.ReplyText != "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile." {
		t.Fatalf("got %+v", m)
	}
}

// refURL lets the raw tests run against a real RabbitMQ (PARLEY_AMQP_REFERENCE=amqp://...),
// to check that the expected codes and texts are RabbitMQ's.
func refURL(t testing.TB, mutate ...func(*Config)) string {
	if u := os.Getenv("PARLEY_AMQP_REFERENCE"); u != "" {
		return u
	}
	url, _ := testServer(t, mutate...)
	return url
}

func TestRawContentErrors(t *testing.T) {
	url := refURL(t)
	cases := []struct {
		name   string
		frames func() []byte
		code   uint16
		text   string
		cls    uint16
		mth    uint16
	}{
		{"body without header", func() []byte {
			return []byte{wire.FrameBody, 0, 1, 0, 0, 0, 1, 'x', wire.FrameEnd}
		}, 505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0},
		{"method while header expected", func() []byte {
			b := wire.AppendMethodFrame(nil, 1, &wire.BasicPublish{RoutingKey: "q"})
			return wire.AppendMethodFrame(b, 1, &wire.BasicQos{})
		}, 505, "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead", 60, 40},
		{"body larger than header", func() []byte {
			b := wire.AppendMethodFrame(nil, 1, &wire.BasicPublish{RoutingKey: "q"})
			b = wire.AppendHeaderFrame(b, 1, 60, 1, &wire.Properties{})
			return append(b, wire.FrameBody, 0, 1, 0, 0, 0, 2, 'x', 'y', wire.FrameEnd)
			// RabbitMQ 3.13+ (3.10 waits for a body size that can never be reached).
		}, 501, "FRAME_ERROR - content body frame exceeds remaining content size", 60, 40},
		{"second channel.open", func() []byte {
			return wire.AppendMethodFrame(nil, 1, &wire.ChannelOpen{})
		}, 504, "CHANNEL_ERROR - second 'channel.open' seen", 20, 10},
		{"method on unopened channel", func() []byte {
			return wire.AppendMethodFrame(nil, 7, &wire.BasicQos{})
		}, 504, "CHANNEL_ERROR - expected 'channel.open'", 60, 10},
		{"channel.flow active=false", func() []byte {
			return wire.AppendMethodFrame(nil, 1, &wire.ChannelFlow{Active: false})
		}, 540, "NOT_IMPLEMENTED - active=false", 20, 20},
		{"immediate publish", func() []byte {
			b := wire.AppendMethodFrame(nil, 1, &wire.BasicPublish{RoutingKey: "q", Immediate: true})
			return wire.AppendHeaderFrame(b, 1, 60, 0, &wire.Properties{})
		}, 540, "NOT_IMPLEMENTED - immediate=true", 60, 40},
		{"undecodable method", func() []byte {
			return []byte{wire.FrameMethod, 0, 1, 0, 0, 0, 5, 0, 50, 0, 10, 0, wire.FrameEnd}
		}, 501, "FRAME_ERROR - cannot decode <<0>>", 50, 10},
		{"oversized frame", func() []byte {
			return append([]byte{wire.FrameBody, 0, 1, 0, 0x10, 0, 0}, make([]byte, 1<<20+1)...)
		}, 501, "", 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if os.Getenv("PARLEY_AMQP_REFERENCE") != "" && tc.code == 501 && tc.cls == 60 {
				t.Skip("RabbitMQ 3.10 does not check body frames against the header's size")
			}
			c := rawDial(t, url)
			c.open("guest")
			c.write(tc.frames())
			if tc.text == "" {
				m, ok := c.next().(*wire.ConnectionClose)
				if !ok || m.ReplyCode != tc.code {
					t.Fatalf("got %+v", m)
				}
				return
			}
			c.expectConnClose(tc.code, tc.text, tc.cls, tc.mth)
		})
	}
}

func TestRawMessageTooLarge(t *testing.T) {
	url, _ := testServer(t, func(c *Config) { c.MaxMessageSize = 10 })
	c := rawDial(t, url)
	c.open("guest")
	b := wire.AppendMethodFrame(nil, 1, &wire.BasicPublish{RoutingKey: "q"})
	b = wire.AppendHeaderFrame(b, 1, 60, 11, &wire.Properties{})
	b = append(b, wire.FrameBody, 0, 1, 0, 0, 0, 11)
	b = append(b, "hello world"...)
	c.write(append(b, wire.FrameEnd))
	m, ok := c.next().(*wire.ChannelClose)
	if !ok || m.ReplyCode != 406 || m.ReplyText != "PRECONDITION_FAILED - message size 11 is larger than configured max size 10" ||
		m.ClassId != 60 || m.MethodId != 40 {
		t.Fatalf("got %+v", m)
	}
	// Frames on a closing channel are dropped until close-ok; the channel id is then reusable.
	c.method(1, &wire.BasicQos{})
	c.method(1, &wire.ChannelCloseOk{})
	c.method(1, &wire.ChannelOpen{})
	if _, ok := c.next().(*wire.ChannelOpenOk); !ok {
		t.Fatal("channel not reusable after close-ok")
	}
}

func TestRawHeartbeatTimeout(t *testing.T) {
	url, _ := testServer(t)
	c := rawDial(t, url)
	c.write(wire.ProtocolHeader)
	c.next()
	c.method(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: []byte("\x00guest\x00guest"), Locale: "en_US"})
	c.next()
	c.method(0, &wire.ConnectionTuneOk{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 1})
	c.method(0, &wire.ConnectionOpen{VirtualHost: "/"})
	// The server sends heartbeats and, hearing nothing back, drops the connection.
	heartbeats := 0
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			break
		}
		if f.Type == wire.FrameHeartbeat {
			heartbeats++
		}
	}
	if heartbeats == 0 {
		t.Fatal("no heartbeats sent")
	}
}

// A client that keeps talking outlives the heartbeat timeout many times over: the server's
// liveness check moves the read deadline on while frames come (here only heartbeats, the
// least a client may send), and drops the client once it falls silent.
func TestRawHeartbeatKeepsAlive(t *testing.T) {
	url, _ := testServer(t)
	c := rawDial(t, url)
	c.write(wire.ProtocolHeader)
	c.next()
	c.method(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: []byte("\x00guest\x00guest"), Locale: "en_US"})
	c.next()
	c.method(0, &wire.ConnectionTuneOk{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 1})
	c.method(0, &wire.ConnectionOpen{VirtualHost: "/"})
	if _, ok := c.next().(*wire.ConnectionOpenOk); !ok {
		t.Fatal("no open-ok")
	}
	// 5 s of heartbeats every 250 ms: two and a half times the longest a silent client lasts
	// (2.5 heartbeat intervals). The server's own heartbeats (a few bytes) wait in the socket.
	for range 20 {
		c.write(wire.AppendHeartbeat(nil))
		time.Sleep(250 * time.Millisecond)
	}
	// Still open: the server answers a channel.open.
	c.method(1, &wire.ChannelOpen{})
	if m := c.next(); m == nil {
		t.Fatal("the server dropped a client that sent heartbeats")
	} else if _, ok := m.(*wire.ChannelOpenOk); !ok {
		t.Fatalf("got %v, want channel.open-ok", m)
	}
	// Silent from here: the server must hang up (before the client's own deadline of rawDial).
	for {
		_, err := c.r.ReadFrame()
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("the server kept a silent client: %v", err)
		}
		return
	}
}
