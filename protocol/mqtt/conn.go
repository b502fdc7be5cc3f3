package mqtt

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// conn is one MQTT connection served by Parley's own loop. It exists so that an idle
// connection costs little: the goroutine that waits for the client's next packet (the one
// ServeConn runs on) only ever frames bytes into packets (guardConn.next) and so keeps the
// smallest stack; everything deep (decoding, mochi's packet handling, the core) runs on a
// short-lived goroutine started when a packet has arrived, which ends once no other whole
// packet is buffered. While the client is idle the connection holds one small goroutine, no
// read buffer and no other goroutine (see "Idle MQTT connection" in docs/performance.md).
// Keep-alive is the socket's read deadline (the runtime's poller timers), refreshed before each
// packet is read, as mochi's own read loop did [MQTT-3.1.2-22].
//
// mochi-mqtt's server is no longer driven through EstablishConnection: conn does what its
// attachClient and Client.Read did (CONNECT validation, the session take-over, CONNACK, the
// read loop, the end of the connection), and hands each later packet to mochi's packet handling
// through Server.InjectPacket, so PUBLISH (topic aliases, the inbound QoS 2 handshake and
// receive maximum), SUBSCRIBE, UNSUBSCRIBE, DISCONNECT and AUTH behave as before. Nothing of
// mochi runs per connection but when a packet comes.
type conn struct {
	s    *Server
	g    *guardConn
	cl   *mochi.Client // from the CONNECT on
	done chan struct{} // the deep goroutine has run what it was given
	// The deep goroutine lingers between bursts while the client is busy (see deep):
	// workerState says whether one runs and waits for work, which it takes from work.
	workerState atomic.Int32
	work        chan func(*conn)
	// Set by the deep goroutine, read by the reader after done.
	end         bool  // the connection is over
	err         error // why; nil for a DISCONNECT or a connection the server stopped
	established bool  // CONNACK accepted the client: finish runs at the end
	panicked    bool
	// The keep-alive deadline last set on the socket (refreshDeadline; reader and deep
	// goroutine in turn, never at once); noDeadline: none was set for keep-alive 0.
	deadline   time.Time
	noDeadline bool
	ack        [4]byte // publishDirect's PUBACK (a local array would be a heap allocation)
}

// workerState values.
const (
	workerNone int32 = iota // no deep goroutine
	workerIdle              // one waits on work for the next burst
	workerBusy              // one runs a burst (or is being handed one)
)

// errPanicked ends a connection whose handling panicked (logged where it happened).
var errPanicked = errors.New("mqtt: panic serving the connection")

// serve runs the connection until it ends. It runs on ServeConn's goroutine, which it keeps
// shallow: it waits for each packet, and runs everything else through deep.
func (c *conn) serve() error {
	_ = c.g.SetDeadline(time.Now().Add(c.s.cfg.ConnectTimeout)) // until the CONNECT
	for !c.end {
		if c.cl != nil {
			if c.cl.Closed() { // stopped by the server (take-over, shutdown)
				break
			}
			c.refreshDeadline()
		}
		if err := c.g.next(); err != nil {
			c.end, c.err = true, err
			break
		}
		// What the burst writes (PUBACKs, ...) goes out in one write at its end.
		c.g.hold()
		c.deep((*conn).burst)
		c.g.flushHeld()
		if x := c.g.sess; x != nil && x.flow.Held() && !c.end {
			x.flow.Await(x.cl.Closed) // a queue this client publishes to is over the limit (flow.go)
		}
	}
	if c.established && !c.panicked {
		c.deep((*conn).finish)
		c.g.flushHeld()
	}
	c.stopWorker()
	if c.cl != nil {
		c.cl.Stop(nil)
	} else {
		_ = c.g.Close()
	}
	if c.panicked {
		return errPanicked
	}
	return c.err
}

// deep runs f on the connection's deep goroutine and waits for it: its stack grows as deep as
// mochi's packet handling needs, rather than the reader's staying that large for the life of
// the connection. The deep goroutine lingers after a burst for one to two ticks of the
// broker's idle clock (broker.IdleTick, 5 ms) for the next one, and ends when none came: a busy
// client's bursts (a publisher sends thousands a second) reuse one goroutine and its grown
// stack, while an idle connection is back to its reader alone within about 10 ms. Starting a
// goroutine per burst and growing its stack from 2 KiB each time was a third of Parley's CPU
// in MQTT fan-in (docs/performance.md, "MQTT fan-in").
//
// (A pool of goroutines shared by all connections was tried before this and made
// TestMQTTPacketIdentifiersSurviveKill fail about one run in twelve; this keeps one deep
// goroutine per connection, which hands its bursts over in the same order as before.)
func (c *conn) deep(f func(*conn)) {
	if c.workerState.CompareAndSwap(workerIdle, workerBusy) {
		c.work <- f
	} else {
		// None runs: the reader is the only one that hands work over, and it waits for each.
		c.workerState.Store(workerBusy)
		if c.work == nil {
			c.work = make(chan func(*conn))
		}
		go c.worker(f)
	}
	<-c.done
}

// worker is the deep goroutine: it runs f, then each burst handed over until it has waited a
// whole idle tick for one (or the reader stops it).
func (c *conn) worker(f func(*conn)) {
	for f != nil {
		c.runDeep(f)
		c.workerState.Store(workerIdle)
		c.done <- struct{}{}
		f = c.nextWork()
	}
}

// nextWork waits for the next burst; nil when the worker is to end. The reader claims an idle
// worker (workerIdle -> workerBusy) before it sends, so a worker that fails to end itself
// (workerIdle -> workerNone) has a send on its way.
func (c *conn) nextWork() func(*conn) {
	ticks := 0
	for {
		select {
		case f := <-c.work:
			return f
		case <-c.s.b.IdleTick():
			// The first tick may come at once: lingering means at least one whole tick.
			if ticks++; ticks < 2 {
				continue
			}
			if c.workerState.CompareAndSwap(workerIdle, workerNone) {
				return nil
			}
		}
	}
}

// stopWorker ends a lingering deep goroutine: the connection is over.
func (c *conn) stopWorker() {
	if c.workerState.CompareAndSwap(workerIdle, workerBusy) {
		c.work <- nil
		c.workerState.Store(workerNone)
	}
}

func (c *conn) runDeep(f func(*conn)) {
	defer func() {
		// A bug reached by one client's bytes must cost that client its connection, not the
		// broker its process.
		if r := recover(); r != nil {
			c.s.log.Error("panic serving an mqtt connection; connection closed",
				zap.String("remote", c.g.RemoteAddr().String()), zap.Any("panic", r), zap.Stack("stack"))
			_ = c.g.Conn.Close()
			c.end, c.panicked = true, true
		}
	}()
	f(c)
}

// refreshDeadline gives the client one and a half keep-alive periods for its next packet
// [MQTT-3.1.2-22]; keep-alive 0 means none. As mochi did, the deadline covers writes too.
//
// The socket's deadline is moved only when it is nearer than that, and then a little further
// (deadlineSlack): a busy client's packets come thousands a second, and setting the deadline
// before each (a runtime timer change) was about 2.5 % of Parley's CPU in QoS 1 fan-in. A
// silent client is disconnected between 1.5 and 1.5 keep-alives plus the slack after its last
// packet, never before.
func (c *conn) refreshDeadline() {
	k := c.cl.State.Keepalive
	if k == 0 {
		if !c.deadline.IsZero() || !c.noDeadline {
			c.deadline, c.noDeadline = time.Time{}, true
			_ = c.g.SetDeadline(time.Time{})
		}
		return
	}
	want := time.Now().Add(time.Duration(k+k/2) * time.Second)
	if !c.deadline.Before(want) {
		return
	}
	c.deadline = want.Add(deadlineSlack(k))
	_ = c.g.SetDeadline(c.deadline)
}

// deadlineSlack is how much later than 1.5 keep-alives a silent client may be disconnected
// (refreshDeadline): a quarter of the keep-alive, at most a second.
func deadlineSlack(k uint16) time.Duration {
	return min(time.Second, time.Duration(k)*time.Second/4)
}

// burst handles the packet the reader framed, then every further whole packet already
// buffered, and settles the PUBACKs they carried before handing back to the reader.
func (c *conn) burst() {
	for {
		raw := c.g.pending
		c.g.pending = nil
		var err error
		if c.cl == nil {
			err = c.connect(raw)
			c.established = err == nil
		} else {
			err = c.packet(raw)
		}
		if err != nil {
			c.end, c.err = true, err
			return
		}
		if c.cl.Closed() { // DISCONNECT, or the server stopped the client meanwhile
			c.end = true
			return
		}
		// A publish found a queue over the flow limit (flow.go): the reader waits before the
		// next packet, also one already buffered.
		if x := c.g.sess; !c.g.buffered() || (x != nil && x.flow.Held()) {
			if x != nil {
				x.flushAcks()
			}
			return
		}
		c.refreshDeadline()
		if err := c.g.next(); err != nil {
			c.end, c.err = true, err
			return
		}
	}
}

// decodePacket decodes one whole packet (fixed header included) as the client's protocol
// version reads it, with mochi's decoders.
func decodePacket(version byte, raw []byte) (packets.Packet, error) {
	var pk packets.Packet
	pk.ProtocolVersion = version
	if len(raw) < 2 {
		return pk, fmt.Errorf("%w: packet of %d bytes", errMalformed, len(raw))
	}
	if err := pk.FixedHeader.Decode(raw[0]); err != nil {
		return pk, err
	}
	h := 2 // the remaining length's bytes, checked by guardConn.next
	for h < len(raw) && h < 5 && raw[h-1]&0x80 != 0 {
		h++
	}
	body := raw[h:]
	pk.FixedHeader.Remaining = len(body)
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Subscribe:
		err = pk.SubscribeDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Pingreq, packets.Pingresp:
	case packets.Auth:
		err = pk.AuthDecode(body)
	default:
		err = fmt.Errorf("invalid packet type; %v", pk.FixedHeader.Type)
	}
	return pk, err
}

// read decodes a packet of the client's and gives it to the bridge's OnPacketRead, as mochi's
// Client.ReadPacket did.
func (c *conn) read(raw []byte) (packets.Packet, error) {
	pk, err := decodePacket(c.cl.Properties.ProtocolVersion, raw)
	if err != nil {
		return pk, err
	}
	return c.s.hook.OnPacketRead(c.cl, pk)
}

// packet handles one packet after the CONNECT with mochi's packet handling. An MQTT 5 client
// whose packet is refused with a reason code of 0x80 or more is told why with DISCONNECT
// [MQTT-4.13.1-1]; the error ends the connection.
func (c *conn) packet(raw []byte) error {
	pk, err := c.read(raw)
	if err != nil {
		return err
	}
	if pk.FixedHeader.Type == packets.Publish && c.publishDirect(&pk) {
		return nil
	}
	err = c.s.m.InjectPacket(c.cl, pk)
	if err == nil {
		return nil
	}
	if code, ok := err.(packets.Code); ok && c.cl.Properties.ProtocolVersion == 5 && code.Code >= packets.ErrUnspecifiedError.Code {
		_ = c.s.m.DisconnectClient(c.cl, code)
	}
	c.s.log.Debug("mqtt packet refused", zap.String("client_id", c.cl.ID), zap.Uint8("type", pk.FixedHeader.Type), zap.Error(err))
	return err
}

// connect establishes the session from the connection's first packet, which must be CONNECT
// [MQTT-3.1.0-1]: validation [MQTT-3.1.4-1] [MQTT-3.1.4-2], login and session (bridge.OnConnect),
// the take-over of a live connection with the same client id [MQTT-3.1.4-3], CONNACK
// [MQTT-3.2.0-1], then the deliveries (bridge.OnSessionEstablished).
func (c *conn) connect(raw []byte) error {
	s := c.s
	if raw[0]>>4 != packets.Connect {
		return packets.ErrProtocolViolationRequireFirstConnect
	}
	cl := s.m.NewClient(c.g, listenerID, "", false)
	c.cl = cl
	pk, err := c.read(raw)
	if err != nil {
		return fmt.Errorf("read connection: %w", err)
	}
	cl.ParseConnect(listenerID, pk)
	code := s.validateConnect(cl, pk)
	if code != packets.CodeSuccess {
		if err := s.m.SendConnack(cl, code, false, nil); err != nil {
			return fmt.Errorf("invalid connection send ack: %w", err)
		}
		return code // [MQTT-3.2.2-7] [MQTT-3.1.4-6]
	}
	if err := s.hook.OnConnect(cl, pk); err != nil {
		return err
	}
	c.refreshDeadline()
	present := s.inherit(pk, cl)
	s.m.Clients.Add(cl) // [MQTT-4.1.0-1]
	// bridge.OnPacketEncode sets session present from the core's view.
	if err := s.m.SendConnack(cl, code, present, nil); err != nil { // [MQTT-3.2.0-2]
		return fmt.Errorf("ack connection packet: %w", err)
	}
	if present {
		if err := cl.ResendInflightMessages(true); err != nil {
			return fmt.Errorf("resend inflight: %w", err)
		}
	}
	s.hook.OnSessionEstablished(cl, pk)
	return nil
}

// validateConnect checks what the CONNECT asks for against the server's capabilities, as
// mochi's server did.
func (s *Server) validateConnect(cl *mochi.Client, pk packets.Packet) packets.Code {
	code := pk.ConnectValidate() // [MQTT-3.1.4-1] [MQTT-3.1.4-2]
	if code != packets.CodeSuccess {
		return code
	}
	caps := s.m.Options.Capabilities
	switch {
	case cl.Properties.ProtocolVersion < 5 && !pk.Connect.Clean && pk.Connect.ClientIdentifier == "":
		return packets.ErrUnspecifiedError // [MQTT-3.1.3-8]
	case cl.Properties.ProtocolVersion < caps.MinimumProtocolVersion:
		return packets.ErrUnsupportedProtocolVersion // [MQTT-3.1.2-2]
	case cl.Properties.Will.Qos > caps.MaximumQos:
		return packets.ErrQosNotSupported // [MQTT-3.2.2-12]
	case cl.Properties.Will.Retain && caps.RetainAvailable == 0:
		return packets.ErrRetainNotSupported // [MQTT-3.2.2-13]
	}
	return code
}

// inherit takes over the live connection of the same client id, if there is one: it is sent
// DISCONNECT 0x8E (MQTT 5) and closed [MQTT-3.1.4-3]. Unless the new connection starts clean,
// mochi's per-client state (its subscription index entries, inbound QoS 2 identifiers) moves
// to the new client. The result is mochi's session present; the CONNACK's comes from the core.
func (s *Server) inherit(pk packets.Packet, cl *mochi.Client) bool {
	existing, ok := s.m.Clients.Get(cl.ID)
	if !ok {
		return false
	}
	if x := s.session(existing); x != nil {
		x.takenOver.Store(true)
	}
	s.disconnect(existing, packets.ErrSessionTakenOver)
	if pk.Connect.Clean || (existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) { // [MQTT-3.1.2-4] [MQTT-3.1.4-4]
		s.m.UnsubscribeClient(existing)
		existing.ClearInflights()
		return false
	}
	if existing.State.Inflight.Len() > 0 {
		cl.State.Inflight = existing.State.Inflight.Clone() // [MQTT-3.1.2-5]
		cl.State.Inflight.ResetReceiveQuota(int32(s.m.Options.Capabilities.ReceiveMaximum))
		cl.State.Inflight.ResetSendQuota(int32(cl.Properties.Props.ReceiveMaximum))
	}
	for _, sub := range existing.State.Subscriptions.GetAll() {
		s.m.Topics.Subscribe(cl.ID, sub)
		cl.State.Subscriptions.Add(sub.Filter, sub)
	}
	// The old client's own records go, but not its index entries: they are the new client's
	// now, under the same client id (so not UnsubscribeClient).
	for f := range existing.State.Subscriptions.GetAll() {
		existing.State.Subscriptions.Delete(f)
	}
	existing.ClearInflights()
	return true
}

// finish ends an established connection: a connection that ended without DISCONNECT keeps its
// will for the session to publish, and the bridge closes the session.
func (c *conn) finish() {
	cl := c.cl
	if c.err != nil {
		cl.Stop(c.err)
	} else {
		cl.Properties.Will = mochi.Will{} // [MQTT-3.14.4-3] [MQTT-3.1.2-10]
	}
	expire := (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
		(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
	c.s.hook.OnDisconnect(cl, c.err, expire)
}
