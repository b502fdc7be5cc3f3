package amqp091

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/amqp091/wire"
	"github.com/parleymq/parley/protocol/auth"
	"github.com/parleymq/parley/protocol/framewriter"
)

// closeOkWait bounds how long a connection waits for connection.close-ok after sending
// connection.close. RabbitMQ waits up to 30s (?CLOSING_TIMEOUT) or the heartbeat timeout.
const closeOkWait = 10 * time.Second

// frameErrorDrain is how long a connection that sent a malformed frame is read (and its input
// thrown away) after connection.close, so the close reaches the client before the socket goes.
const frameErrorDrain = 500 * time.Millisecond

// clientCloseWait bounds how long a closed connection waits for the client to hang up.
const clientCloseWait = time.Second

// conn is one AMQP connection. Its fields are owned by the reader goroutine (serve) unless
// noted; the writer goroutine owns the socket's write side.
type conn struct {
	s   *Server
	log *zap.Logger
	nc  net.Conn
	w   *framewriter.Writer
	// Channels with publisher confirms to emit before the writer's next write (markConfirms).
	confirmMu    sync.Mutex
	confirmDirty []*channel
	confirmSpare []*channel
	r            *wire.Reader
	dec          wire.Decoder
	id           uint64 // broker connection id: the owner of exclusive queues

	user      *auth.User
	userName  string
	vhost     *broker.VHost
	vhostName string
	released  bool // release has deleted the exclusive queues; reader goroutine only

	frameMax   uint32
	channelMax uint16
	heartbeat  time.Duration

	// Liveness (heartbeats): the reader notes each frame in recvd, and the writer's heartbeat
	// check (every half interval) moves the read deadline to twice the interval ahead when a
	// frame came since the check before (checkLiveness). The reader so needs no clock and no
	// syscall per frame. dlMu orders those moves with the deadlines the connection sets for
	// itself (closing, blocked, finishing), which dlHeld keeps the check from overriding.
	recvd  atomic.Bool
	dlMu   sync.Mutex
	dlHeld bool

	// Client capabilities (client-properties "capabilities"), read-only after connection.start-ok.
	capCancelNotify bool
	capBlocked      bool
	capAuthFailure  bool

	channels  map[uint16]*channel
	published bool // a publish completed since the last frame: check the resource alarm
	// wakes defers the wake-ups of the queues this connection publishes to while more frames
	// are buffered (every channel's PublishScratch points here); flushed before every read
	// that may wait and before anything else the reader waits for (broker.Wakes).
	wakes broker.Wakes
	// flow holds the reader back while a queue this connection publishes to is over the flow
	// limit and its consumers' connections cannot take more (Config.PublishFlowLimit).
	flow broker.FlowGate

	// closing is set once connection.close has been sent (by either goroutine); from then on
	// the reader only waits for close-ok. closeMu serialises the transition.
	closeMu sync.Mutex
	closing atomic.Bool
	opened  atomic.Bool // connection.open-ok sent: blocked notifications may be sent

	// Consumers of this connection, for kicking their queues when the writer drains.
	kmu       sync.Mutex
	consumers map[*consumer]struct{}
	starved   atomic.Bool

	quit chan struct{} // closed when connection.close has been sent or received
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		s:         s,
		nc:        nc,
		id:        s.b.NewConnectionID(),
		channels:  map[uint16]*channel{},
		consumers: map[*consumer]struct{}{},
		frameMax:  s.cfg.FrameMax,
		quit:      make(chan struct{}),
		flow:      broker.FlowGate{Limit: s.cfg.PublishFlowLimit, WorkersExempt: true},
	}
	c.log = s.log.With(zap.Uint64("conn", c.id), zap.Stringer("remote", nc.RemoteAddr()))
	c.r = wire.NewReader(nc, s.cfg.FrameMax)
	c.w = framewriter.New(nc, framewriter.Options{
		Heartbeat: wire.AppendHeartbeat, BeforeFlush: c.flushConfirms, OnDrain: c.kickAll,
		OnHeartbeatCheck: c.checkLiveness,
	})
	return c
}

// serve runs the connection to its end on the calling goroutine (the reader).
func (c *conn) serve() {
	go c.w.Run()
	defer c.finish()
	defer func() {
		// A last resort: a bug must not take the process (or other connections) down.
		if r := recover(); r != nil {
			c.log.Error("bug: panic serving AMQP connection; closing it with 541",
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			c.sendClose(newError(internalError, "internal error"))
		}
	}()
	_ = c.nc.SetDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout))
	if err := c.handshake(); err != nil {
		if !isEOF(err) {
			c.log.Debug("handshake failed", zap.Error(err))
		}
		return
	}
	c.opened.Store(true)
	if blocked, reason, _ := c.s.blockState(); blocked {
		c.notifyBlocked(reason, true)
	}
	_ = c.nc.SetDeadline(time.Time{})
	c.watchLiveness(true)
	c.loop()
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// release shuts the connection's channels (consumers cancelled, unacked deliveries requeued)
// and deletes its exclusive queues. It runs on the reader goroutine, before connection.close-ok
// when the client closes (so a client whose close completed finds its exclusive queues gone)
// and again from finish, where it finds nothing left to do.
func (c *conn) release() {
	for id, ch := range c.channels {
		ch.shutdown()
		delete(c.channels, id)
	}
	if c.vhost != nil && !c.released {
		c.released = true
		c.vhost.ConnectionClosed(c.id)
	}
}

// finish releases everything the connection holds: channels (consumers cancelled, unacked
// deliveries requeued), exclusive queues, the writer and the socket.
func (c *conn) finish() {
	c.release()
	c.w.Close()
	select {
	case <-c.w.Done():
	case <-time.After(closeOkWait):
		// The client is not reading; give up on what is left.
	}
	// After the close handshake the client closes the socket, as with RabbitMQ: closing ours
	// first would make clients (amqp091-go) see EOF before they finish their own close and
	// report an error. Wait briefly for the client's end of stream, throwing input away.
	c.setReadDeadline(time.Now().Add(clientCloseWait), true)
	_, _ = io.CopyN(io.Discard, c.nc, 1<<20)
	_ = c.nc.Close()
	<-c.w.Done()
	if c.opened.Load() {
		c.log.Info("connection closed")
	}
}

// livenessDeadline is the read deadline of a connection that just heard from its client:
// twice the heartbeat interval ahead, as RabbitMQ closes a connection after two missed
// heartbeats (rabbit_heartbeat); none without heartbeats.
func (c *conn) livenessDeadline() time.Time {
	if c.heartbeat <= 0 {
		return time.Time{}
	}
	return time.Now().Add(2 * c.heartbeat)
}

// checkLiveness runs on the writer goroutine every half heartbeat interval
// (framewriter.Options.OnHeartbeatCheck): if a frame came since the last check, the read
// deadline moves to twice the interval ahead. A silent client is therefore dropped between two
// and two and a half intervals after its last frame. (Before, the reader read the clock at
// every frame to move the deadline itself: 1.7% of the broker's CPU in a persistent 4p/4c
// profile, see docs/performance.md.)
func (c *conn) checkLiveness() {
	if !c.recvd.Swap(false) {
		return
	}
	c.dlMu.Lock()
	if !c.dlHeld && !c.closing.Load() {
		_ = c.nc.SetReadDeadline(c.livenessDeadline())
	}
	c.dlMu.Unlock()
}

// watchLiveness starts (on) or pauses (off: no read deadline) the heartbeat deadline, unless
// the connection is closing, whose deadline (the close-ok wait) stays as it is.
func (c *conn) watchLiveness(on bool) {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	if c.closing.Load() {
		return
	}
	c.dlHeld = !on
	if on {
		_ = c.nc.SetReadDeadline(c.livenessDeadline())
	} else {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
}

// setReadDeadline sets a read deadline; hold keeps checkLiveness from moving it until the next
// call without hold.
func (c *conn) setReadDeadline(t time.Time, hold bool) {
	c.dlMu.Lock()
	c.dlHeld = hold
	_ = c.nc.SetReadDeadline(t)
	c.dlMu.Unlock()
}

// loop reads frames until the connection ends.
func (c *conn) loop() {
	defer c.wakes.Flush()
	for {
		if !c.r.HasFrame() {
			c.wakes.Flush() // the read may wait for the client
		}
		f, err := c.r.ReadFrame()
		if err != nil {
			c.readFailed(err)
			return
		}
		if !c.recvd.Load() {
			// Load first: the check reads this line twice a heartbeat interval, a store per
			// frame would take it from the reader's cache every time.
			c.recvd.Store(true)
		}
		if c.closing.Load() {
			if c.closingFrame(f) {
				return
			}
			continue
		}
		if err := c.frame(f); err != nil {
			ae := asAMQPError(err)
			if ae.code == 0 {
				return // silent close
			}
			c.sendClose(ae)
		}
		if c.published {
			c.published = false
			c.waitUnblocked()
			if c.flow.Held() {
				c.awaitFlow()
			}
		}
	}
}

// awaitFlow holds the reader while a queue this connection published to is over the flow
// limit (broker.FlowGate): the client's publishes wait in its TCP stack, as RabbitMQ's credit
// flow makes them wait. The queues get their wake-ups first, and the heartbeat deadline is
// paused, as while the connection is blocked: frames that come meanwhile are read after.
func (c *conn) awaitFlow() {
	c.wakes.Flush()
	c.watchLiveness(false)
	c.flow.Await(c.gone)
	c.watchLiveness(true)
}

// gone reports that connection.close was sent or received.
func (c *conn) gone() bool {
	select {
	case <-c.quit:
		return true
	default:
		return c.closing.Load()
	}
}

// readFailed handles a read error: a framing error gets connection.close 501 and no more
// frames are read (we have lost sync, as RabbitMQ's fatal_frame_error); anything else
// (EOF, reset, missed heartbeats) just ends the connection.
func (c *conn) readFailed(err error) {
	var text string
	var fe *wire.FrameError
	switch {
	case errors.As(err, &fe):
		text = rabbitFrameErrorText(fe)
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && !c.closing.Load() {
			c.log.Info("missed heartbeats from client; closing", zap.Duration("timeout", 2*c.heartbeat))
		} else if !isEOF(err) && !c.closing.Load() {
			c.log.Debug("read failed", zap.Error(err))
		}
		return
	}
	if !c.closing.Load() {
		c.sendClose(newError(frameError, "%s", text))
		// The stream is out of sync, but closing now with unread input makes the kernel reset
		// the connection, and the client may lose the close we just sent. Swallow what is
		// still coming until the client hangs up or the close-ok wait (the read deadline)
		// runs out, bounded in time and bytes.
		c.setReadDeadline(time.Now().Add(frameErrorDrain), true)
		_, _ = io.CopyN(io.Discard, c.nc, 4<<20)
	}
}

// sendClose starts a server-initiated connection close (AMQP 0-9-1 §4.2.5.3 hard error): stop
// the channels, send connection.close, then accept nothing but close-ok for a bounded time.
// Reader goroutine only.
func (c *conn) sendClose(e *amqpError) {
	if !c.beginClose(e, closeOkWait) {
		return
	}
	c.log.Info("closing connection", zap.Uint16("code", e.code), zap.String("text", e.text))
	for id, ch := range c.channels {
		ch.shutdown()
		delete(c.channels, id)
	}
}

// beginClose sends connection.close once and bounds the wait for close-ok. Any goroutine.
func (c *conn) beginClose(e *amqpError, wait time.Duration) bool {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closing.Load() {
		return false
	}
	c.closing.Store(true)
	close(c.quit)
	b := c.w.Lock()
	b = wire.AppendMethodFrame(b, 0, &wire.ConnectionClose{
		ReplyCode: e.code, ReplyText: e.text, ClassId: e.classID, MethodId: e.methodID,
	})
	c.w.Unlock(b)
	c.setReadDeadline(time.Now().Add(wait), true)
	return true
}

// forceClose closes the connection from outside the reader (Server.Close).
func (c *conn) forceClose(e *amqpError, wait time.Duration) {
	if !c.opened.Load() {
		_ = c.nc.Close()
		return
	}
	c.beginClose(e, wait)
}

// closingFrame handles a frame after connection.close was sent: only close-ok (or a crossing
// close) matters. It reports whether the connection is done.
func (c *conn) closingFrame(f wire.Frame) bool {
	if f.Channel != 0 || f.Type != wire.FrameMethod {
		return false
	}
	m, err := c.dec.Decode(f.Payload)
	if err != nil {
		return false
	}
	switch m.(type) {
	case *wire.ConnectionCloseOk:
		return true
	case *wire.ConnectionClose:
		// Both sides closed at once: answer and stop (RabbitMQ does the same when stopping).
		b := c.w.Lock()
		c.w.Unlock(wire.AppendMethodFrame(b, 0, &wire.ConnectionCloseOk{}))
		return true
	}
	return false
}

// frame dispatches one frame in the running state.
func (c *conn) frame(f wire.Frame) error {
	if f.Channel == 0 {
		switch f.Type {
		case wire.FrameHeartbeat:
			return nil
		case wire.FrameMethod:
			m, err := c.dec.Decode(f.Payload)
			if err != nil {
				return c.decodeError(f.Payload, err)
			}
			return c.method0(m)
		default:
			return unexpectedFrameError(f)
		}
	}
	if f.Type == wire.FrameHeartbeat {
		return unexpectedFrameError(f)
	}
	ch, ok := c.channels[f.Channel]
	if !ok {
		if f.Type != wire.FrameMethod {
			return newError(unexpectedFrame, "expected method frame, got non method frame instead")
		}
		m, err := c.dec.Decode(f.Payload)
		if err != nil {
			return c.decodeError(f.Payload, err)
		}
		if _, isOpen := m.(*wire.ChannelOpen); !isOpen {
			return newError(channelError, "expected 'channel.open'").withMethod(m.ClassID(), m.MethodID())
		}
		// RabbitMQ counts open channels against channel_max (rabbit_reader:create_channel).
		// RabbitMQ raises it from the reader, not from the channel: class and method ids 0.
		if c.channelMax != 0 && len(c.channels) >= int(c.channelMax) {
			return newError(notAllowed, "number of channels opened (%d) has reached the negotiated channel_max (%d)",
				len(c.channels), c.channelMax)
		}
		ch = newChannel(c, f.Channel)
		c.channels[f.Channel] = ch
		b := c.w.Lock()
		c.w.Unlock(wire.AppendMethodFrame(b, f.Channel, &wire.ChannelOpenOk{}))
		return nil
	}
	return ch.frame(f)
}

// decodeError maps a method decoding failure. RabbitMQ answers undecodable arguments with
// 501 "cannot decode <<...>>" and drops the socket on an unknown class or method id.
func (c *conn) decodeError(payload []byte, err error) error {
	if errors.Is(err, wire.ErrUnknownMethod) {
		c.log.Info("unknown method; closing", zap.Error(err))
		return &amqpError{} // code 0: close silently
	}
	e := newError(frameError, "cannot decode %s", erlBinary(payload[min(len(payload), 4):]))
	if len(payload) >= 4 {
		e.classID = uint16(payload[0])<<8 | uint16(payload[1])
		e.methodID = uint16(payload[2])<<8 | uint16(payload[3])
	}
	return e
}

// unexpectedFrameError is RabbitMQ's rabbit_reader:unexpected_frame/4 text.
func unexpectedFrameError(f wire.Frame) *amqpError {
	if len(f.Payload) <= 16 {
		return newError(unexpectedFrame, "type %d, all octets = %s", f.Type, erlBinary(f.Payload))
	}
	return newError(unexpectedFrame, "type %d, first 16 octets = %s", f.Type, erlBinary(f.Payload[:16]))
}

// erlBinary formats bytes as Erlang's ~w prints a binary: <<1,2,3>>.
func erlBinary(b []byte) string {
	out := make([]byte, 0, 2+4*len(b)+2)
	out = append(out, "<<"...)
	for i, x := range b {
		if i > 0 {
			out = append(out, ',')
		}
		out = fmt.Appendf(out, "%d", x)
	}
	return string(append(out, ">>"...))
}

// method0 handles a method on channel 0 while running.
func (c *conn) method0(m wire.Method) error {
	switch m := m.(type) {
	case *wire.ConnectionClose:
		// Client-initiated close (AMQP 0-9-1 §4.2.5.3 close handshake): release everything,
		// answer close-ok, and end once it is written.
		c.release()
		_ = m
		c.closeMu.Lock()
		if !c.closing.Swap(true) {
			close(c.quit)
		}
		b := c.w.Lock()
		c.w.Unlock(wire.AppendMethodFrame(b, 0, &wire.ConnectionCloseOk{}))
		c.closeMu.Unlock()
		return &amqpError{} // end the loop silently
	case *wire.ConnectionCloseOk:
		return &amqpError{}
	case *wire.ConnectionBlocked, *wire.ConnectionUnblocked:
		// Server-to-client only; RabbitMQ ignores nothing here, but a client never sends them.
	}
	return newError(channelError, "unexpected method in connection state running").withMethod(m.ClassID(), m.MethodID())
}

// notifyBlocked sends connection.blocked/unblocked to a client that asked for them.
func (c *conn) notifyBlocked(reason string, blocked bool) {
	if !c.capBlocked || !c.opened.Load() || c.closing.Load() {
		return
	}
	b := c.w.Lock()
	if blocked {
		b = wire.AppendMethodFrame(b, 0, &wire.ConnectionBlocked{Reason: reason})
	} else {
		b = wire.AppendMethodFrame(b, 0, &wire.ConnectionUnblocked{})
	}
	c.w.Unlock(b)
}

// waitUnblocked stops the reader while a resource alarm is on: RabbitMQ stops reading from a
// connection that publishes during an alarm (rabbit_reader control_throttle). The read deadline
// is lifted meanwhile so missed heartbeats do not kill it.
func (c *conn) waitUnblocked() {
	if !c.s.alarm.Load() {
		return
	}
	blocked, _, ch := c.s.blockState()
	if !blocked {
		return
	}
	c.wakes.Flush()
	c.watchLiveness(false)
	select {
	case <-ch:
	case <-c.quit:
	}
	c.watchLiveness(true)
}

// kickAll asks every queue this connection consumes from to try again: output drained below
// the high-water mark.
func (c *conn) kickAll() {
	if !c.starved.Swap(false) {
		return
	}
	c.kmu.Lock()
	qs := make([]*broker.Queue, 0, len(c.consumers))
	for k := range c.consumers {
		if k.q != nil {
			qs = append(qs, k.q)
		}
	}
	c.kmu.Unlock()
	for _, q := range qs {
		q.Kick()
	}
}

// rabbitFrameErrorText words a framing error as RabbitMQ's reader does
// (rabbit_reader: "type ~tp, all octets = ~tp: ~tp"), Erlang term formatting included, so
// clients and tools that match on it see the same text.
func rabbitFrameErrorText(fe *wire.FrameError) string {
	var b strings.Builder
	fmt.Fprintf(&b, "type %d, all octets = <<", fe.Type)
	for i, o := range fe.Payload {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(o)))
	}
	b.WriteString(">>: ")
	switch {
	case errors.Is(fe, wire.ErrFrameTooLarge):
		b.WriteString(erlangTuple(b.Len(), "frame_too_large", int(fe.Size), int(fe.Limit)))
	case errors.Is(fe, wire.ErrBadFrameEnd):
		b.WriteString(erlangTuple(b.Len(), "invalid_frame_end_marker", int(fe.End)))
	default:
		b.WriteString("unknown_frame")
	}
	return b.String()
}

// erlangTuple prints {atom,N,...} as Erlang's ~p does at column col: on one line when it fits
// the 80-column line, otherwise one element per line, aligned after the brace.
func erlangTuple(col int, atom string, ns ...int) string {
	elems := []string{atom}
	for _, n := range ns {
		elems = append(elems, strconv.Itoa(n))
	}
	one := "{" + strings.Join(elems, ",") + "}"
	if col+len(one) < 79 {
		return one
	}
	return "{" + strings.Join(elems, ",\n"+strings.Repeat(" ", col+1)) + "}"
}
