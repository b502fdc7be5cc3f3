package stomp

import (
	"crypto/rand"
	"encoding/hex"
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

	"github.com/go-stomp/stomp/v3/frame"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/protocol/auth"
	"github.com/parleymq/parley/protocol/framewriter"
	"github.com/parleymq/parley/protocol/stomp/wire"
)

// errorDrain is how long a connection that was sent an ERROR frame is still read (input
// thrown away) so the ERROR reaches the client before the socket closes: closing with unread
// input makes TCP send a reset, which can destroy the ERROR frame in flight.
const errorDrain = 500 * time.Millisecond

// writeWait bounds how long a closing connection waits for its writer to flush.
const writeWait = 10 * time.Second

// stompError is an ERROR frame: msg is its message header, detail its body, RabbitMQ's texts.
type stompError struct {
	msg, detail string
	receiptID   string // the receipt-id header, when the frame that failed asked for a receipt
}

func (e *stompError) Error() string { return e.msg + ": " + e.detail }

func errorf(msg, format string, args ...any) *stompError {
	return &stompError{msg: msg, detail: fmt.Sprintf(format, args...)}
}

// asStompError maps core errors onto RabbitMQ's STOMP ERROR frames: an AMQP error becomes a
// frame whose message is the error's name in lower case ("not_found") and whose body is the
// AMQP reply text, as rabbit_stomp_processor:amqp_death/3 does.
func asStompError(err error) *stompError {
	var se *stompError
	if errors.As(err, &se) {
		return se
	}
	var me *meta.Error
	if errors.As(err, &me) {
		return &stompError{msg: strings.ToLower(meta.CodeName(me.Code)), detail: me.Text}
	}
	var ae *auth.Error
	if errors.As(err, &ae) {
		return &stompError{msg: "access_refused", detail: ae.Text}
	}
	return &stompError{msg: "Processing error", detail: "Processing error"}
}

// conn is one STOMP connection. Fields are owned by the reader goroutine unless noted.
type conn struct {
	s       *Server
	log     *zap.Logger
	nc      net.Conn
	w       *framewriter.Writer
	r       *wire.Reader
	id      uint64
	session string

	version   wire.Version
	user      *auth.User
	vhost     *broker.VHost
	vhostName string
	recvBeat  time.Duration // the client's heart-beat interval; 0 = none
	scratch   broker.PublishScratch
	flow      broker.FlowGate // publisher flow control, noted at each SEND, awaited by the reader
	declared  map[string]bool // queues this connection has declared (RabbitMQ's route_state)
	writeOK   map[string]bool // exchanges we may publish to
	txs       map[string][]*frame.Frame
	tempQs    map[string]string // /temp-queue/ name -> its queue
	connected atomic.Bool

	// mu guards subscriptions and unacked deliveries, which queue goroutines touch when they
	// deliver. Never held while calling into the core (broker/LOCKING.md).
	mu       sync.Mutex
	subs     map[string]*subscription
	unacked  []pendingAck
	nextTag  uint64
	closing  bool
	starved  atomic.Bool
	receipts receiptQueue

	failOnce sync.Once
	failed   chan struct{} // closed when an ERROR has been queued and the connection must end
}

func newConn(s *Server, nc net.Conn, framed bool) *conn {
	c := &conn{
		s:        s,
		nc:       nc,
		id:       s.b.NewConnectionID(),
		declared: map[string]bool{},
		writeOK:  map[string]bool{},
		txs:      map[string][]*frame.Frame{},
		tempQs:   map[string]string{},
		subs:     map[string]*subscription{},
		flow:     broker.FlowGate{Limit: s.cfg.PublishFlowLimit, WorkersExempt: true},
		nextTag:  1,
		failed:   make(chan struct{}),
	}
	var r [12]byte
	_, _ = rand.Read(r[:])
	c.session = "session-" + hex.EncodeToString(r[:])
	c.log = s.log.With(zap.Uint64("conn", c.id), zap.Stringer("remote", nc.RemoteAddr()))
	c.r = wire.NewReader(nc, s.cfg.Limits)
	c.w = framewriter.New(nc, framewriter.Options{Framed: framed, Heartbeat: wire.AppendHeartbeat, OnDrain: c.kickAll})
	c.receipts.c = c
	return c
}

// serve runs the connection to its end on the calling goroutine (the reader).
func (c *conn) serve() {
	go c.w.Run()
	defer c.finish()
	defer func() {
		// A last resort: a bug must not take the process (or other connections) down.
		if r := recover(); r != nil {
			c.log.Error("bug: panic serving STOMP connection; closing it",
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			c.fail(&stompError{msg: "Processing error", detail: "Processing error"})
		}
	}()
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout))
	for {
		f, err := c.r.Read()
		if err != nil {
			c.readFailed(err)
			return
		}
		if c.recvBeat > 0 {
			// STOMP 1.2 §Heart-beating: anything received counts; allow twice the interval.
			_ = c.nc.SetReadDeadline(time.Now().Add(2 * c.recvBeat))
		}
		if f == nil {
			continue // a heart-beat
		}
		if f.Command == frame.SEND || f.Command == frame.COMMIT {
			c.waitUnblocked()
		}
		if err := c.frame(f); err != nil {
			se := asStompError(err)
			if se.receiptID == "" {
				se.receiptID = f.Header.Get(frame.Receipt)
			}
			c.fail(se)
			return
		}
		select {
		case <-c.failed:
			return
		default:
		}
		if !c.connected.Load() {
			return // DISCONNECT
		}
		if c.flow.Held() {
			c.awaitFlow()
		}
	}
}

// awaitFlow holds the reader while a queue this connection sent to is over the flow limit
// (broker.FlowGate), with no read deadline meanwhile, as while a resource alarm holds it.
func (c *conn) awaitFlow() {
	_ = c.nc.SetReadDeadline(time.Time{})
	c.flow.Await(c.gone)
	if c.recvBeat > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(2 * c.recvBeat))
	}
}

// gone reports that the connection is ending (an ERROR was queued).
func (c *conn) gone() bool {
	select {
	case <-c.failed:
		return true
	default:
		return false
	}
}

// waitUnblocked holds the reader while a resource alarm is on.
func (c *conn) waitUnblocked() {
	ch := c.s.unblockedChan()
	select {
	case <-ch:
		return
	default:
	}
	// No read deadline while held: missing heart-beats are our doing, not the client's.
	_ = c.nc.SetReadDeadline(time.Time{})
	select {
	case <-ch:
	case <-c.failed:
	}
	if c.recvBeat > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(2 * c.recvBeat))
	}
}

// readFailed reports a read error: a malformed frame gets an ERROR frame; EOF, a reset or a
// missed heart-beat just end the connection.
func (c *conn) readFailed(err error) {
	var fe *wire.FrameError
	if errors.As(err, &fe) {
		c.log.Info("malformed STOMP frame; closing the connection", zap.Error(err))
		c.fail(&stompError{msg: "Malformed frame", detail: fe.Detail})
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && c.connected.Load() {
		c.log.Info("missed heart-beats from the client; closing the connection", zap.Duration("interval", c.recvBeat))
		return
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.log.Debug("STOMP read failed", zap.Error(err))
	}
}

// fail queues an ERROR frame and marks the connection for closing (STOMP 1.2 §ERROR: the
// server closes the connection just after sending it). Safe from any goroutine.
func (c *conn) fail(e *stompError) {
	c.failOnce.Do(func() {
		c.log.Debug("STOMP error frame sent", zap.String("message", e.msg), zap.String("detail", e.detail))
		c.writeError(e)
		close(c.failed)
		// Unblock the reader if it is waiting for input (server shutdown, publish rejected).
		_ = c.nc.SetReadDeadline(time.Now().Add(errorDrain))
	})
}

// writeError appends an ERROR frame as RabbitMQ's send_error_frame builds it.
func (c *conn) writeError(e *stompError) {
	b := c.w.Lock()
	b = wire.AppendCommand(b, frame.ERROR)
	b = wire.AppendHeader(b, "message", e.msg, c.version)
	b = wire.AppendHeader(b, frame.ContentType, "text/plain", c.version)
	b = wire.AppendHeader(b, frame.Version, "1.0,1.1,1.2", c.version)
	if e.receiptID != "" {
		b = wire.AppendHeader(b, frame.ReceiptId, e.receiptID, c.version)
	}
	b = wire.AppendHeader(b, frame.ContentLength, strconv.Itoa(len(e.detail)), c.version)
	b = wire.AppendBody(b, []byte(e.detail))
	c.w.Unlock(b)
}

// finish releases everything: subscriptions are cancelled and unacknowledged deliveries
// requeued (as when an AMQP channel closes), exclusive queues deleted, then the socket closed
// once the writer has flushed.
func (c *conn) finish() {
	c.mu.Lock()
	c.closing = true
	subs := make([]*subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	clear(c.subs)
	unacked := c.unacked
	c.unacked = nil
	c.mu.Unlock()
	for _, s := range subs {
		s.cancelled.Store(true)
		s.q.Cancel(queue.ConsumerID(s.cid.Load()))
	}
	requeue(unacked)
	if c.vhost != nil {
		c.vhost.ConnectionClosed(c.id)
	}
	c.w.Close()
	select {
	case <-c.w.Done():
	case <-time.After(writeWait):
	}
	// Let an ERROR reach the client before the socket goes: read and discard briefly.
	select {
	case <-c.failed:
		_ = c.nc.SetReadDeadline(time.Now().Add(errorDrain))
		_, _ = io.CopyN(io.Discard, c.nc, 1<<20)
	default:
	}
	_ = c.nc.Close()
	<-c.w.Done()
	if c.connected.Load() || c.user != nil {
		c.log.Debug("STOMP connection closed")
	}
}

// kickAll wakes the queues of every subscription: the writer drained below its high-water
// mark, so subscriptions that were refused credit may receive again.
func (c *conn) kickAll() {
	if !c.starved.Swap(false) {
		return
	}
	c.mu.Lock()
	qs := make([]*broker.Queue, 0, len(c.subs))
	for _, s := range c.subs {
		qs = append(qs, s.q)
	}
	c.mu.Unlock()
	for _, q := range qs {
		q.Kick()
	}
}

// frame handles one frame on the reader goroutine.
func (c *conn) frame(f *frame.Frame) error {
	if !c.connected.Load() {
		switch f.Command {
		case frame.CONNECT, frame.STOMP:
			return c.connect(f)
		}
		return errorf("Illegal command", "You must log in using CONNECT first")
	}
	switch f.Command {
	case frame.CONNECT, frame.STOMP:
		return errorf("Bad command", "Already connected")
	case frame.DISCONNECT:
		return c.disconnect(f)
	case frame.SEND:
		return c.withTx(f, c.send)
	case frame.SUBSCRIBE:
		return c.withReceipt(f, c.subscribe)
	case frame.UNSUBSCRIBE:
		return c.withReceipt(f, c.unsubscribe)
	case frame.ACK, frame.NACK:
		return c.withTx(f, c.ack)
	case frame.BEGIN:
		return c.withReceipt(f, c.begin)
	case frame.COMMIT:
		return c.withReceipt(f, c.commit)
	case frame.ABORT:
		return c.withReceipt(f, c.abort)
	}
	return errorf("Bad command", "Could not interpret command \"%s\"\n", f.Command)
}

// withReceipt runs handle; when f asks for a receipt, the RECEIPT is written once handle and
// every publish it started have been accepted by the core, in the order frames arrived.
func (c *conn) withReceipt(f *frame.Frame, handle func(*frame.Frame, *receipt) error) error {
	var r *receipt
	if id, ok := f.Header.Contains(frame.Receipt); ok {
		r = c.receipts.add(id)
	}
	if err := handle(f, r); err != nil {
		if r != nil {
			c.receipts.drop(r)
		}
		return err
	}
	if r != nil {
		r.release(true)
	}
	return nil
}

// withTx runs SEND, ACK and NACK now, or keeps them for COMMIT when they name a transaction.
func (c *conn) withTx(f *frame.Frame, handle func(*frame.Frame, *receipt) error) error {
	tx, ok := f.Header.Contains(frame.Transaction)
	if !ok {
		return c.withReceipt(f, handle)
	}
	frames, ok := c.txs[tx]
	if !ok {
		return errorf("Bad transaction", "Invalid transaction identifier: %q\n", tx)
	}
	if len(frames) >= maxTransactionActions {
		return errorf("Transaction too large", "Too many actions in transaction (limit %d)", maxTransactionActions)
	}
	if f.Command == frame.SEND {
		// Check the destination now, as RabbitMQ does, so a bad one fails at SEND.
		if _, err := c.route(f); err != nil {
			return err
		}
	}
	c.txs[tx] = append(frames, f)
	return c.withReceipt(f, func(*frame.Frame, *receipt) error { return nil })
}

func (c *conn) begin(f *frame.Frame, _ *receipt) error {
	tx, ok := f.Header.Contains(frame.Transaction)
	if !ok {
		return errorf("Missing transaction", "BEGIN must include a 'transaction' header\n")
	}
	if _, exists := c.txs[tx]; !exists && len(c.txs) >= maxTransactions {
		return errorf("Transaction limit exceeded", "Too many concurrent transactions (limit %d)", maxTransactions)
	}
	c.txs[tx] = []*frame.Frame{}
	return nil
}

// commit performs the transaction's frames in order. Its RECEIPT waits for all its publishes.
func (c *conn) commit(f *frame.Frame, r *receipt) error {
	tx, ok := f.Header.Contains(frame.Transaction)
	if !ok {
		return errorf("Missing transaction", "COMMIT must include a 'transaction' header\n")
	}
	frames, ok := c.txs[tx]
	if !ok {
		return errorf("Bad transaction", "Invalid transaction identifier: %q\n", tx)
	}
	delete(c.txs, tx)
	for _, g := range frames {
		var err error
		switch g.Command {
		case frame.SEND:
			err = c.send(g, r)
		default:
			err = c.ack(g, r)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *conn) abort(f *frame.Frame, _ *receipt) error {
	tx, ok := f.Header.Contains(frame.Transaction)
	if !ok {
		return errorf("Missing transaction", "ABORT must include a 'transaction' header\n")
	}
	if _, ok := c.txs[tx]; !ok {
		return errorf("Bad transaction", "Invalid transaction identifier: %q\n", tx)
	}
	delete(c.txs, tx)
	return nil
}

// disconnect ends the session gracefully: its RECEIPT (STOMP 1.2 §DISCONNECT) is written
// after every earlier receipt, so a client that waits for it knows all its SENDs were taken.
func (c *conn) disconnect(f *frame.Frame) error {
	if id, ok := f.Header.Contains(frame.Receipt); ok {
		r := c.receipts.add(id)
		r.release(true)
		select {
		case <-r.written:
		case <-time.After(writeWait):
			c.log.Warn("DISCONNECT receipt not confirmed in time; closing anyway")
		}
	}
	c.connected.Store(false)
	return nil
}
