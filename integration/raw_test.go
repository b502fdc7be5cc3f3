package integration

// A tiny AMQP 0-9-1 client written out by hand with byte literals, for what no well-behaved
// client library will send: reused channel ids, stray content frames, broken frame ends,
// oversized frames, server-only methods. It shares nothing with Parley's own codec on purpose.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const frameEnd = 0xCE

type rawConn struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
	// Negotiated in the handshake.
	channelMax uint16
	frameMax   uint32
}

type rawFrame struct {
	typ     byte
	channel uint16
	payload []byte
}

// rawMethod is a decoded method frame header: class and method ids and the arguments' bytes.
type rawMethod struct {
	class, method uint16
	args          []byte
}

// closeInfo is the content of a connection.close or channel.close.
type closeInfo struct {
	code          uint16
	text          string
	class, method uint16
}

func (c closeInfo) String() string {
	return fmt.Sprintf("%d %q (class %d method %d)", c.code, c.text, c.class, c.method)
}

// Builders for argument encodings (AMQP 0-9-1 §4.2.5).
func shortstr(s string) []byte { return append([]byte{byte(len(s))}, s...) }
func longstr(s string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(s)))
	return append(b, s...)
}
func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// frame encodes a whole frame.
func frame(typ byte, channel uint16, payload []byte) []byte {
	return cat([]byte{typ}, u16(channel), u32(uint32(len(payload))), payload, []byte{frameEnd})
}

func methodFrame(channel, class, method uint16, args ...[]byte) []byte {
	return frame(1, channel, cat(u16(class), u16(method), cat(args...)))
}

// rawDialNoHandshake connects without sending anything.
func rawDialNoHandshake(t testing.TB, s *Server) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.AMQPAddr, waitTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", s.AMQPAddr, err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(2 * waitTimeout))
	return &rawConn{t: t, nc: nc, r: bufio.NewReader(nc)}
}

type rawOpts struct {
	user, pass, vhost string
	channelMax        uint16 // 0: accept the server's
	frameMax          uint32 // 0: accept the server's
}

// rawDial connects and performs the handshake with guest/guest on vhost "/".
func rawDial(t testing.TB, s *Server) *rawConn {
	t.Helper()
	c := rawDialNoHandshake(t, s)
	if cl, err := c.handshake(rawOpts{user: "guest", pass: "guest", vhost: "/"}); err != nil || cl != nil {
		t.Fatalf("raw handshake: close %v, err %v", cl, err)
	}
	return c
}

// handshake runs protocol header, start/start-ok, tune/tune-ok and open/open-ok. It returns the
// connection.close the server answered with instead, if it did.
func (c *rawConn) handshake(o rawOpts) (*closeInfo, error) {
	c.write([]byte("AMQP\x00\x00\x09\x01"))
	m, err := c.readMethod()
	if err != nil {
		return nil, err
	}
	if m.class != 10 || m.method != 10 {
		return nil, fmt.Errorf("want connection.start, got %d.%d", m.class, m.method)
	}
	// client-properties: {capabilities: {authentication_failure_close: true}}
	capTable := cat(shortstr("authentication_failure_close"), []byte{'t', 1})
	props := cat(shortstr("capabilities"), []byte{'F'}, u32(uint32(len(capTable))), capTable)
	c.write(methodFrame(0, 10, 11,
		u32(uint32(len(props))), props,
		shortstr("PLAIN"),
		longstr("\x00"+o.user+"\x00"+o.pass),
		shortstr("en_US")))
	m, err = c.readMethod()
	if err != nil {
		return nil, err
	}
	if cl := m.asClose(); cl != nil {
		return cl, nil
	}
	if m.class != 10 || m.method != 30 || len(m.args) < 8 {
		return nil, fmt.Errorf("want connection.tune, got %d.%d", m.class, m.method)
	}
	c.channelMax = binary.BigEndian.Uint16(m.args[0:2])
	c.frameMax = binary.BigEndian.Uint32(m.args[2:6])
	if o.channelMax != 0 {
		c.channelMax = o.channelMax
	}
	if o.frameMax != 0 {
		c.frameMax = o.frameMax
	}
	c.write(methodFrame(0, 10, 31, u16(c.channelMax), u32(c.frameMax), u16(0)))
	c.write(methodFrame(0, 10, 40, shortstr(o.vhost), shortstr(""), []byte{0}))
	m, err = c.readMethod()
	if err != nil {
		return nil, err
	}
	if cl := m.asClose(); cl != nil {
		return cl, nil
	}
	if m.class != 10 || m.method != 41 {
		return nil, fmt.Errorf("want connection.open-ok, got %d.%d", m.class, m.method)
	}
	return nil, nil
}

func (c *rawConn) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("raw write: %v", err)
	}
}

func (c *rawConn) readFrame() (rawFrame, error) {
	var h [7]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return rawFrame{}, err
	}
	size := binary.BigEndian.Uint32(h[3:7])
	if size > 1<<24 {
		return rawFrame{}, fmt.Errorf("frame size %d", size)
	}
	body := make([]byte, size+1)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return rawFrame{}, err
	}
	if body[size] != frameEnd {
		return rawFrame{}, fmt.Errorf("bad frame end %#x from the server", body[size])
	}
	return rawFrame{typ: h[0], channel: binary.BigEndian.Uint16(h[1:3]), payload: body[:size]}, nil
}

// readMethod returns the next method frame, skipping heartbeats.
func (c *rawConn) readMethod() (rawMethod, error) {
	for {
		f, err := c.readFrame()
		if err != nil {
			return rawMethod{}, err
		}
		if f.typ == 8 {
			continue
		}
		if f.typ != 1 || len(f.payload) < 4 {
			return rawMethod{}, fmt.Errorf("frame type %d on channel %d, want a method", f.typ, f.channel)
		}
		return rawMethod{class: binary.BigEndian.Uint16(f.payload), method: binary.BigEndian.Uint16(f.payload[2:]),
			args: f.payload[4:]}, nil
	}
}

// asClose decodes connection.close (10.50) or channel.close (20.40), nil for other methods.
func (m rawMethod) asClose() *closeInfo {
	if !(m.class == 10 && m.method == 50) && !(m.class == 20 && m.method == 40) {
		return nil
	}
	a := m.args
	if len(a) < 3 || len(a) < 3+int(a[2])+4 {
		return &closeInfo{text: "<malformed close>"}
	}
	n := int(a[2])
	return &closeInfo{
		code:   binary.BigEndian.Uint16(a[0:2]),
		text:   string(a[3 : 3+n]),
		class:  binary.BigEndian.Uint16(a[3+n:]),
		method: binary.BigEndian.Uint16(a[5+n:]),
	}
}

// openChannel sends channel.open on id and waits for open-ok.
func (c *rawConn) openChannel(id uint16) {
	c.t.Helper()
	c.write(methodFrame(id, 20, 10, shortstr("")))
	m, err := c.readMethod()
	if err != nil {
		c.t.Fatalf("channel.open %d: %v", id, err)
	}
	if m.class != 20 || m.method != 11 {
		c.t.Fatalf("channel.open %d: got %d.%d %v", id, m.class, m.method, m.asClose())
	}
}

// expectConnectionClose reads until connection.close, checks it, sends close-ok and checks the
// server then closes the socket.
func (c *rawConn) expectConnectionClose(code uint16, text string, class, method uint16) {
	c.t.Helper()
	for {
		m, err := c.readMethod()
		if err != nil {
			c.t.Fatalf("want connection.close %d %q, got %v", code, text, err)
		}
		if m.class == 20 && m.method == 40 {
			c.t.Fatalf("got channel.close %v, want connection.close %d %q", m.asClose(), code, text)
		}
		if m.class != 10 || m.method != 50 {
			continue // e.g. a delivery in flight
		}
		got := m.asClose()
		want := closeInfo{code: code, text: text, class: class, method: method}
		if *got != want {
			c.t.Fatalf("connection.close %v, want %v", got, want)
		}
		break
	}
	c.write(methodFrame(0, 10, 51))
	c.expectEOF()
}

// expectEOF checks the server closes the socket without sending another method.
func (c *rawConn) expectEOF() {
	c.t.Helper()
	for {
		f, err := c.readFrame()
		if err != nil {
			if errors.Is(err, io.EOF) || isReset(err) {
				return
			}
			c.t.Fatalf("want the socket closed, got %v", err)
		}
		if f.typ != 8 {
			c.t.Fatalf("want the socket closed, got a frame of type %d: %x", f.typ, f.payload)
		}
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// An old or foreign protocol header is answered with the version the server speaks, then close.
func TestRawProtocolHeaderMismatch(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDialNoHandshake(t, s)
	c.write([]byte("AMQP\x00\x00\x0a\x00")) // 0-10, which RabbitMQ does not speak
	got := make([]byte, 8)
	if _, err := io.ReadFull(c.r, got); err != nil {
		t.Fatalf("reading the server's protocol header: %v", err)
	}
	if string(got) != "AMQP\x00\x00\x09\x01" {
		t.Fatalf("server answered %q, want AMQP 0-9-1's header", got)
	}
	c.expectEOF()
}

func TestRawHandshakeAndClientClose(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDial(t, s)
	if c.channelMax != 2047 || c.frameMax != 131072 {
		t.Fatalf("tune: channel_max %d frame_max %d, want RabbitMQ's defaults 2047 and 131072", c.channelMax, c.frameMax)
	}
	c.openChannel(1)
	c.write(methodFrame(1, 20, 40, u16(200), shortstr("bye"), u16(0), u16(0)))
	m, err := c.readMethod()
	if err != nil || m.class != 20 || m.method != 41 {
		t.Fatalf("channel.close: got %d.%d %v", m.class, m.method, err)
	}
	c.write(methodFrame(0, 10, 50, u16(200), shortstr("bye"), u16(0), u16(0)))
	m, err = c.readMethod()
	if err != nil || m.class != 10 || m.method != 51 {
		t.Fatalf("connection.close: got %d.%d %v", m.class, m.method, err)
	}
	// After close-ok the client closes the socket (AMQP 0-9-1 §4.2.2), not the server.
}

// 504 CHANNEL_ERROR: channel.open on a channel that is already open.
func TestRawChannelReuse(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDial(t, s)
	c.openChannel(1)
	c.write(methodFrame(1, 20, 10, shortstr("")))
	c.expectConnectionClose(504, "CHANNEL_ERROR - second 'channel.open' seen", 20, 10)
}

// 504 CHANNEL_ERROR: a method on a channel that was never opened.
func TestRawMethodOnClosedChannel(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDial(t, s)
	c.write(methodFrame(3, 60, 10, u32(0), u16(10), []byte{0})) // basic.qos
	c.expectConnectionClose(504, "CHANNEL_ERROR - expected 'channel.open'", 60, 10)
}

// 505 UNEXPECTED_FRAME: a content header with no basic.publish before it.
func TestRawContentHeaderWithoutMethod(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDial(t, s)
	c.openChannel(1)
	c.write(frame(2, 1, cat(u16(60), u16(0), u64(5), u16(0))))
	c.expectConnectionClose(505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)
}

// 505 UNEXPECTED_FRAME: a method where the content header of a basic.publish belongs.
func TestRawMethodInsteadOfContentHeader(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDial(t, s)
	c.openChannel(1)
	c.write(methodFrame(1, 60, 40, u16(0), shortstr("amq.direct"), shortstr("k"), []byte{0}))
	c.write(methodFrame(1, 60, 10, u32(0), u16(10), []byte{0}))
	c.expectConnectionClose(505, "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead", 60, 40)
}

// badFrameEndText is RabbitMQ's answer to the basic.qos frame with a zero end octet that the
// tests send; the line break and indentation are Erlang's ~p pretty-printing, which indents by
// the column where the term starts.
var badFrameEndText = "FRAME_ERROR - type 1, all octets = <<0,60,0,10,0,0,0,0,0,10,0>>: {invalid_frame_end_marker,\n" +
	strings.Repeat(" ", 52) + "0}"

// 501 FRAME_ERROR: a frame whose end octet is not 0xCE.
func TestRawBadFrameEnd(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDial(t, s)
	c.openChannel(1)
	f := methodFrame(1, 60, 10, u32(0), u16(10), []byte{0})
	f[len(f)-1] = 0
	c.write(f)
	c.expectConnectionClose(501, badFrameEndText, 0, 0)
}

// 501 FRAME_ERROR: a frame larger than the negotiated frame_max.
func TestRawOversizedFrame(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDial(t, s)
	c.openChannel(1)
	big := make([]byte, c.frameMax+100)
	c.write(frame(3, 1, big))
	c.expectConnectionClose(501, fmt.Sprintf("FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,%d,%d}", len(big), c.frameMax-8), 0, 0)
}

// 501 FRAME_ERROR: method arguments that do not decode.
func TestRawUndecodableMethod(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDial(t, s)
	c.openChannel(1)
	c.write(methodFrame(1, 60, 80, u64(1), []byte{0, 0})) // basic.ack with a trailing octet
	c.expectConnectionClose(501, "FRAME_ERROR - cannot decode <<0,0,0,0,0,0,0,1,0,0>>", 60, 80)
}

// 503 COMMAND_INVALID: a method only the server may send.
func TestRawServerOnlyMethod(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDial(t, s)
	c.openChannel(1)
	c.write(methodFrame(1, 40, 11)) // exchange.declare-ok
	c.expectConnectionClose(503, "COMMAND_INVALID - unimplemented method", 40, 11)
}

// An unknown class or method: RabbitMQ drops the connection without a connection.close.
func TestRawUnknownMethod(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDial(t, s)
	c.openChannel(1)
	c.write(methodFrame(1, 60, 99))
	c.expectEOF()
}

// 530 NOT_ALLOWED: opening more channels than the negotiated channel_max.
func TestRawChannelMax(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDialNoHandshake(t, s)
	if cl, err := c.handshake(rawOpts{user: "guest", pass: "guest", vhost: "/", channelMax: 2}); cl != nil || err != nil {
		t.Fatalf("handshake: %v %v", cl, err)
	}
	c.openChannel(1)
	c.openChannel(2)
	c.write(methodFrame(3, 20, 10, shortstr("")))
	c.expectConnectionClose(530, "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)", 0, 0)
}

// 403 ACCESS_REFUSED on a bad password, as a connection.close because the client announced
// authentication_failure_close.
func TestRawBadLogin(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDialNoHandshake(t, s)
	cl, err := c.handshake(rawOpts{user: "guest", pass: "wrong", vhost: "/"})
	if err != nil || cl == nil {
		t.Fatalf("handshake with a bad password: close %v err %v", cl, err)
	}
	want := closeInfo{code: 403, text: "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.", class: 0, method: 0}
	if *cl != want {
		t.Fatalf("got %v, want %v", cl, want)
	}
}

// 530 NOT_ALLOWED on connection.open of a vhost that does not exist.
func TestRawUnknownVhost(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDialNoHandshake(t, s)
	cl, err := c.handshake(rawOpts{user: "guest", pass: "guest", vhost: "no-such-vhost"})
	if err != nil || cl == nil {
		t.Fatalf("open of a missing vhost: close %v err %v", cl, err)
	}
	want := closeInfo{code: 530, text: "NOT_ALLOWED - vhost no-such-vhost not found", class: 10, method: 40}
	if *cl != want {
		t.Fatalf("got %v, want %v", cl, want)
	}
}

// A connection that sends garbage is closed alone: another connection's consumer keeps working.
func TestRawMalformedDoesNotDisturbOthers(t *testing.T) {
	t.Parallel()
	s, _, ch := setup(t)
	q := declareQueue(t, s, ch, "q", nil)
	d := consume(t, ch, q, "c", true, nil)
	publish(t, ch, "", q, text("before"))
	if got := string(recv(t, d).Body); got != "before" {
		t.Fatalf("got %q", got)
	}
	for i := 0; i < 2; i++ {
		c := rawDial(t, s)
		c.openChannel(1)
		bad := methodFrame(1, 60, 10, u32(0), u16(10), []byte{0})
		bad[len(bad)-1] = 0x00
		c.write(bad)
		c.expectConnectionClose(501, badFrameEndText, 0, 0)
		g := rawDialNoHandshake(t, s)
		g.write([]byte("GET / HTTP/1.1\r\n\r\n"))
		g.expectEOFOrHeader()
	}
	publish(t, ch, "", q, text("after"))
	if got := string(recv(t, d).Body); got != "after" {
		t.Fatalf("got %q", got)
	}
}

// expectEOFOrHeader: after a non-AMQP greeting the server answers with its protocol header
// and closes.
func (c *rawConn) expectEOFOrHeader() {
	c.t.Helper()
	got := make([]byte, 8)
	n, err := io.ReadFull(c.r, got)
	if err == nil && string(got) != "AMQP\x00\x00\x09\x01" {
		c.t.Fatalf("answer to an HTTP request: %q", got[:n])
	}
	if err == nil {
		c.expectEOF()
	}
}

// 540 NOT_IMPLEMENTED for what RabbitMQ does not do: immediate publishes, channel.flow
// active=false from the client, basic.recover requeue=false.
func TestNotImplemented(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	for _, tc := range []struct {
		name, reason string
		do           func(ch *amqp.Channel) error
	}{
		{"immediate", "NOT_IMPLEMENTED - immediate=true", func(ch *amqp.Channel) error {
			return ch.Publish("amq.direct", "k", false, true, text("x"))
		}},
		{"flow", "NOT_IMPLEMENTED - active=false", func(ch *amqp.Channel) error { return ch.Flow(false) }},
		//lint:ignore SA1019 basic.recover is what this case checks
		{"recover", "NOT_IMPLEMENTED - requeue=false", func(ch *amqp.Channel) error { return ch.Recover(false) }},
	} {
		c := dial(t, s)
		closed := c.NotifyClose(make(chan *amqp.Error, 1))
		ch := channel(t, c)
		_ = tc.do(ch)
		t.Run(tc.name, func(t *testing.T) {
			expectConnectionClosed(t, closed, amqp.NotImplemented, tc.reason)
		})
	}
}

// Heartbeats from the server: with heartbeat 1 negotiated the server sends heartbeat frames,
// and a client that sends nothing is disconnected after missing them.
func TestRawHeartbeatTimeout(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDialNoHandshake(t, s)
	c.write([]byte("AMQP\x00\x00\x09\x01"))
	if m, err := c.readMethod(); err != nil || m.class != 10 || m.method != 10 {
		t.Fatalf("connection.start: %v", err)
	}
	c.write(methodFrame(0, 10, 11, u32(0), shortstr("PLAIN"), longstr("\x00guest\x00guest"), shortstr("en_US")))
	if m, err := c.readMethod(); err != nil || m.class != 10 || m.method != 30 {
		t.Fatalf("connection.tune: %v", err)
	}
	c.write(methodFrame(0, 10, 31, u16(2047), u32(131072), u16(1)))
	c.write(methodFrame(0, 10, 40, shortstr("/"), shortstr(""), []byte{0}))
	if m, err := c.readMethod(); err != nil || m.class != 10 || m.method != 41 {
		t.Fatalf("connection.open-ok: %v", err)
	}
	heartbeats := 0
	for {
		f, err := c.readFrame()
		if err != nil {
			if heartbeats == 0 {
				t.Fatalf("disconnected (%v) without a heartbeat frame first", err)
			}
			if !errors.Is(err, io.EOF) && !isReset(err) {
				t.Fatalf("want the server to close a silent connection, got %v", err)
			}
			return
		}
		switch {
		case f.typ == 8 && f.channel == 0 && len(f.payload) == 0:
			heartbeats++
		case f.typ == 1 && len(f.payload) >= 4 && binary.BigEndian.Uint16(f.payload) == 10 && binary.BigEndian.Uint16(f.payload[2:]) == 50:
			t.Logf("server sent connection.close %v before closing", rawMethod{class: 10, method: 50, args: f.payload[4:]}.asClose())
		default:
			t.Fatalf("unexpected frame type %d on channel %d", f.typ, f.channel)
		}
	}
}

// 502 SYNTAX_ERROR is what RabbitMQ raises for a SASL PLAIN response that is not
// "\0user\0password" (rabbit_auth_mechanism_plain's protocol_error). It raises it while the
// connection is still starting, so nothing reaches the wire: the error is only logged and the
// socket is dropped without a connection.close, even with authentication_failure_close.
func TestRawMalformedPlainResponse(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	c := rawDialNoHandshake(t, s)
	c.write([]byte("AMQP\x00\x00\x09\x01"))
	if m, err := c.readMethod(); err != nil || m.class != 10 || m.method != 10 {
		t.Fatalf("connection.start: %v", err)
	}
	capTable := cat(shortstr("authentication_failure_close"), []byte{'t', 1})
	props := cat(shortstr("capabilities"), []byte{'F'}, u32(uint32(len(capTable))), capTable)
	c.write(methodFrame(0, 10, 11, u32(uint32(len(props))), props, shortstr("PLAIN"), longstr("no-nul-here"), shortstr("en_US")))
	c.expectEOF()
}

// Publisher confirms as they are on the wire: every sequence number is confirmed exactly once,
// individually or by a basic.ack with multiple=true covering it (AMQP 0-9-1 ext: confirms).
func TestRawConfirmsCoverEverySequenceNumber(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	q := Name(t, "q")
	cleanupQueue(t, s, q)
	c := rawDial(t, s)
	c.openChannel(1)
	c.write(methodFrame(1, 50, 10, u16(0), shortstr(q), []byte{0}, u32(0))) // queue.declare
	if m, err := c.readMethod(); err != nil || m.class != 50 || m.method != 11 {
		t.Fatalf("queue.declare-ok: %d.%d %v", m.class, m.method, err)
	}
	c.write(methodFrame(1, 85, 10, []byte{0})) // confirm.select
	if m, err := c.readMethod(); err != nil || m.class != 85 || m.method != 11 {
		t.Fatalf("confirm.select-ok: %d.%d %v", m.class, m.method, err)
	}
	const n = 200
	var batch []byte
	for i := 0; i < n; i++ {
		body := []byte(fmt.Sprintf("m%d", i))
		batch = append(batch, methodFrame(1, 60, 40, u16(0), shortstr(""), shortstr(q), []byte{0})...)
		batch = append(batch, frame(2, 1, cat(u16(60), u16(0), u64(uint64(len(body))), u16(0)))...)
		batch = append(batch, frame(3, 1, body)...)
	}
	c.write(batch)
	confirmed := make([]bool, n+1)
	highest, multiples := uint64(0), 0
	for highest < n {
		m, err := c.readMethod()
		if err != nil {
			t.Fatalf("after %d confirms: %v", highest, err)
		}
		if m.class != 60 || m.method != 80 || len(m.args) != 9 {
			t.Fatalf("got %d.%d %v, want basic.ack", m.class, m.method, m.asClose())
		}
		tag, multiple := binary.BigEndian.Uint64(m.args), m.args[8]&1 == 1
		if tag == 0 || tag > n {
			t.Fatalf("basic.ack for sequence number %d; only 1..%d were published", tag, n)
		}
		from := tag
		if multiple {
			multiples++
			from = 1
		}
		for i := from; i <= tag; i++ {
			if confirmed[i] && !multiple {
				t.Fatalf("sequence number %d confirmed twice", i)
			}
			if multiple && i > highest && confirmed[i] {
				t.Fatalf("basic.ack multiple=true up to %d covers %d, already confirmed singly", tag, i)
			}
			confirmed[i] = true
		}
		if tag > highest {
			highest = tag
		}
	}
	for i := 1; i <= n; i++ {
		if !confirmed[i] {
			t.Fatalf("sequence number %d never confirmed", i)
		}
	}
	t.Logf("%d publishes confirmed, %d of the acks with multiple=true", n, multiples)
}
