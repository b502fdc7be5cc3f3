package mqtt

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
	"github.com/parleymq/parley/protocol/auth"
)

// Queue names. A session's queue is mqtt.s.<client-id> (DESIGN.md §3); a shared subscription
// group's queue is mqtt.share.<group>.<filter>.
const (
	sessionQueuePrefix = "mqtt.s."
	shareQueuePrefix   = "mqtt.share."
)

// Binding arguments that carry a subscription's options.
const (
	argFilter  = "x-mqtt-filter"
	argQoS     = "x-mqtt-qos"
	argSubID   = "x-mqtt-subscription-id"
	argNoLocal = "x-mqtt-no-local"
	argRAP     = "x-mqtt-retain-as-published"
)

// subscription is one MQTT subscription of a session.
type subscription struct {
	filter  string // as subscribed, $share/<group>/ prefix included for a shared one
	match   string // the filter that topics are matched against
	qos     byte
	id      int // subscription identifier; 0 none
	noLocal bool
	rap     bool // retain as published

	// Shared subscriptions only: the group's queue and this session's consumer on it.
	shared *consumer
	args   message.Table // the binding's arguments (non-shared)
}

// session is one connection's view of an MQTT session. The session itself (queue, bindings,
// messages) lives in the core; this holds the live part: consumers, the writer, in-flight
// packet identifiers.
type session struct {
	s          *Server
	cl         *mochi.Client
	clientID   string
	user       string
	v          *broker.VHost
	version    byte
	persistent bool
	present    bool
	// expiryMs is the session expiry in ms (0: never) as the last CONNECT (or DISCONNECT, at
	// close) set it; endsAtClose: a persistent session resumed by an MQTT 5 CONNECT (or ended
	// by a DISCONNECT) with expiry 0, which ends with this connection.
	expiryMs    int64
	endsAtClose bool
	// takenOver: a new connection with the same client id took this one's place (conn.go
	// inherit), so mochi's records of the client id are the new connection's.
	takenOver atomic.Bool
	q         *broker.Queue // the session queue; nil until needed for a transient session
	qdef      meta.QueueDef
	will      *mochi.Will
	willProps packets.Properties    // the CONNECT's will properties, which mochi's Will drops
	scratch   broker.PublishScratch // used by one packet's handling at a time (publish)
	// Publishing (the connection's deep goroutine, one packet at a time): the last topic and
	// its routing key (routingKeyOf), and the shared header tables of plain QoS 0 and QoS 1
	// publishes (messageFrom), made at the first such publish.
	inTopic, inKey string
	plainHdrs      [2]message.Table
	// Flow control (flow.go): noted by the deep goroutine after each publish, awaited by the
	// reader after the burst (conn.done orders the two).
	flow broker.FlowGate

	// Outbound credit: deliveries handed over by the core and not yet settled count against
	// limit (the client's receive maximum, capped by Config.MaxInflight).
	limit   int32
	used    atomic.Int32
	starved atomic.Bool

	mu      sync.Mutex
	subs    map[string]*subscription // by filter as subscribed
	refused map[string]bool          // filters of the SUBSCRIBE being processed that failed
	// retainFor are the subscriptions of the SUBSCRIBE being processed that get the retained
	// messages they match once SUBACK is out.
	retainFor []retainedFor
	pending   []outDelivery     // handed over by the core, not yet written
	inflight  map[uint16]outMsg // written with QoS 1/2, not yet acknowledged
	inbound   map[uint16]bool   // persistent sessions: inbound QoS 2 identifiers awaiting PUBREL
	restored  map[uint16]bool   // those of them read from the session's records at connect
	nextID    uint16
	closed    bool
	writing   bool // a writeLoop goroutine is running (started by startWriterLocked)
	// PUBACKs taken by the reader and not yet settled (flushAcks), and the credit they free.
	acks      ackRuns
	ackSpare  ackRuns
	ackCredit int32
	// The writer's last routing key and its topic (topicOf); one writer runs at a time, and
	// x.mu (writing) orders one after the other.
	lastKey, lastTopic string
	// started: the CONNACK is out (start ran). Deliveries of shared subscriptions resumed
	// before it wait in pending until then.
	started bool
	// prevIDs: the packet identifiers the session's previous connection sent unacknowledged
	// messages of its queue under, by message reference; a redelivery reuses its identifier
	// [MQTT-4.4.0-1].
	prevIDs map[uint64]uint16
	// reserved: the identifiers in prevIDs, given to no other message (packetids.go);
	// recorded: the identifier stored with each unacknowledged message of the session queue.
	reserved map[uint16]bool
	recorded map[uint64]uint16
	main     *consumer
	resumed  map[string][]byte // the state records read at connect, for start

	wg sync.WaitGroup // the writeLoop goroutine, while one runs
}

type outDelivery struct {
	c        *consumer // nil for a retained message
	d        queue.Delivery
	credit   bool
	retained *retainedOut
	// pid is the packet identifier recordIDs picked (0: none yet); again: the message went
	// out under it before.
	pid   uint16
	again bool
}

type outMsg struct {
	c        *consumer
	d        queue.DeliveryID
	qos      byte
	released bool // QoS 2: PUBREC came, the core has settled it; waiting for PUBCOMP
	credit   bool
	ref      uint64 // the message's reference in the session queue (Delivery.Ref); 0 for none
}

// openSession finds or creates the client's session queue. A clean session (3.1.1 clean
// session, MQTT 5 clean start) discards what was there [MQTT-3.1.2-4]; otherwise the
// subscriptions of the existing session come back from its bindings.
func (s *Server) openSession(cl *mochi.Client, pk packets.Packet, user string) (*session, error) {
	v, ok := s.b.VHost(s.cfg.VHost)
	if !ok {
		return nil, errors.New("mqtt vhost does not exist")
	}
	version := cl.Properties.ProtocolVersion
	var persistent bool
	var expiry uint32
	if version == 5 {
		expiry = pk.Properties.SessionExpiryInterval
		if s.cfg.MaxSessionExpiry > 0 && expiry > s.cfg.MaxSessionExpiry {
			expiry = s.cfg.MaxSessionExpiry
		}
		persistent = expiry > 0
	} else {
		persistent = !pk.Connect.Clean
	}
	s.mu.Lock()
	if t, ok := s.wills[cl.ID]; ok {
		t.Stop() // [MQTT-3.1.3-9]
		delete(s.wills, cl.ID)
	}
	prevIDs := s.sentIDs[cl.ID]
	delete(s.sentIDs, cl.ID)
	s.mu.Unlock()
	if pk.Connect.Clean || !persistent {
		prevIDs = nil
	}

	name := sessionQueuePrefix + cl.ID
	endsAtClose := false
	if q, ok := v.LookupQueue(name); ok && (pk.Connect.Clean || q.Def().Durable != persistent) {
		if version == 5 && !pk.Connect.Clean && q.Def().Durable {
			// Clean start 0 with expiry 0: the existing session is resumed [MQTT-3.1.2-6]
			// and ends when this connection does [MQTT-3.1.2-23].
			persistent, endsAtClose = true, true
		} else {
			v.DeleteQueueIf(q)
		}
	}
	_, existed := v.LookupQueue(name)
	// A session queue is small and there may be many: packed into a partition group.
	def := meta.QueueDef{Name: name, Durable: persistent, Packed: true}
	if persistent && version == 5 && expiry != 0xFFFFFFFF && !endsAtClose {
		// The core deletes a session nobody consumed from for its expiry interval (RabbitMQ
		// does the same with x-expires).
		def.Args = message.Table{"x-expires": int64(expiry) * 1000}
	}
	if persistent && version < 5 && s.cfg.PersistentSessionExpiry > 0 {
		// MQTT 3.1.1 has no session expiry; the configured one (Mosquitto's
		// persistent_client_expiration) applies to every clean-session-false session.
		def.Args = message.Table{"x-expires": int64(s.cfg.PersistentSessionExpiry) * 1000}
	}
	var q *broker.Queue
	if persistent || existed {
		// A transient session without subscriptions needs no queue: it is declared with the
		// first SUBSCRIBE (ensureQueue), so idle and publish-only clients cost the core nothing.
		var err error
		if q, err = declareSessionQueue(v, def, existed); err != nil {
			return nil, err
		}
	}
	var expiryMs int64
	if def.Args != nil {
		expiryMs, _ = message.Int(def.Args["x-expires"])
	}
	if q != nil && persistent && existed && !endsAtClose {
		// The session expiry of the newest CONNECT applies [MQTT-3.1.2-23], whatever the
		// session queue was declared with (declareSessionQueue keeps an existing queue).
		q.SetExpires(expiryMs)
	}
	limit := int32(s.cfg.MaxInflight)
	if version == 5 && cl.Properties.Props.ReceiveMaximum > 0 && int32(cl.Properties.Props.ReceiveMaximum) < limit {
		limit = int32(cl.Properties.Props.ReceiveMaximum) // [MQTT-3.3.4-9]
	}
	sess := &session{
		flow: broker.FlowGate{Limit: s.cfg.PublishFlowLimit},
		s:    s, cl: cl, clientID: cl.ID, user: user, v: v, version: version,
		persistent: persistent, present: existed && persistent, q: q, qdef: def,
		expiryMs: expiryMs, endsAtClose: endsAtClose,
		limit: limit, subs: map[string]*subscription{}, refused: map[string]bool{},
		inflight: map[uint16]outMsg{}, inbound: map[uint16]bool{}, restored: map[uint16]bool{}, prevIDs: prevIDs,
	}
	if cl.Properties.Will.Flag != 0 {
		w := cl.Properties.Will
		sess.will = &w
		sess.willProps = pk.Connect.WillProperties
	}
	for _, b := range v.QueueBindings(name) {
		if b.Source != s.cfg.Exchange {
			continue
		}
		if sub, ok := subscriptionFromArgs(b.Args); ok {
			sess.subs[sub.filter] = sub
		}
	}
	return sess, nil
}

func declareSessionQueue(v *broker.VHost, def meta.QueueDef, existed bool) (*broker.Queue, error) {
	if _, err := v.DeclareQueue(def, false); err != nil {
		var me *meta.Error
		if !existed || !errors.As(err, &me) || me.Code != meta.PreconditionFailed {
			return nil, err
		}
		// Same session, another expiry: keep the queue (and its messages) as it is.
	}
	q, ok := v.LookupQueue(def.Name)
	if !ok {
		return nil, errors.New("session queue vanished while opening")
	}
	return q, nil
}

// ensureQueue declares a transient session's queue at its first subscription and starts
// consuming it. Only the connection's reader calls it (SUBSCRIBE), after start.
func (x *session) ensureQueue() error {
	x.mu.Lock()
	q := x.q
	x.mu.Unlock()
	if q != nil {
		return nil
	}
	q, err := declareSessionQueue(x.v, x.qdef, false)
	if err != nil {
		return err
	}
	c := &consumer{x: x, q: q}
	x.mu.Lock()
	x.q, x.main = q, c
	x.mu.Unlock()
	return c.consume()
}

func subscriptionFromArgs(args message.Table) (*subscription, bool) {
	f, ok := args[argFilter].(string)
	if !ok {
		return nil, false
	}
	sub := &subscription{filter: f, match: f, args: args}
	if n, ok := message.Int(args[argQoS]); ok && n >= 0 && n <= 2 {
		sub.qos = byte(n)
	}
	if n, ok := message.Int(args[argSubID]); ok {
		sub.id = int(n)
	}
	sub.noLocal, _ = args[argNoLocal].(bool)
	sub.rap, _ = args[argRAP].(bool)
	return sub, true
}

// start begins consuming the session queue, once the CONNACK has been sent and before the
// client's next packet is read. A persistent session that existed resumes its QoS 2 flows and
// shared subscriptions from the core (durable.go).
func (x *session) start() {
	x.mu.Lock()
	x.started = true
	x.startWriterLocked()
	x.mu.Unlock()
	x.resendPubrels(x.restoreInflight(x.resumed))
	x.resumed = nil
	if x.q == nil {
		return
	}
	c := &consumer{x: x, q: x.q}
	x.mu.Lock()
	x.main = c
	x.mu.Unlock()
	if err := c.consume(); err != nil {
		x.s.log.Warn("mqtt session queue not consumed", zap.String("client_id", x.clientID), zap.Error(err))
		x.cl.Stop(packets.ErrServerUnavailable)
	}
}

// resume reads a persistent session's state records, before the CONNACK, and rejoins its
// shared subscriptions then, so that a publish that follows the CONNACK finds them (their
// deliveries wait for start).
func (x *session) resume() {
	if !x.persistent || !x.present || x.q == nil {
		return
	}
	x.resumed = x.q.State()
	x.loadSentIDs()
	x.resumeShared(x.resumed)
}

// resendPubrels sends PUBREL again for QoS 2 deliveries a previous connection had not
// completed [MQTT-4.4.0-1].
func (x *session) resendPubrels(ids []uint16) {
	for _, id := range ids {
		x.mu.Lock()
		x.inflight[id] = outMsg{qos: 2, released: true}
		x.mu.Unlock()
		_ = x.cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id})
	}
}

func (x *session) canPublish() bool {
	return x.s.users.Check(x.user, x.v.Name(), auth.Write, "exchange", x.s.cfg.Exchange) == nil
}

// subscribeAllowed answers mochi's per-filter check during SUBSCRIBE: false for a filter that
// subscribe could not bind (permissions or the core refused).
func (x *session) subscribeAllowed(filter string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return !x.refused[filter]
}

func (x *session) canSubscribe() bool {
	return x.s.users.Check(x.user, x.v.Name(), auth.Read, "exchange", x.s.cfg.Exchange) == nil
}

// subscribe binds each filter of a SUBSCRIBE. Filters that fail are remembered for
// subscribeAllowed; mochi then answers them with 0x87 (MQTT 5) or 0x80 (3.1.1).
func (x *session) subscribe(pk packets.Packet) {
	allowed := x.canSubscribe()
	for _, f := range pk.Filters {
		if !mochi.IsValidFilter(f.Filter, false) || (f.NoLocal && isShared(f.Filter)) {
			continue // mochi refuses these itself
		}
		var err error
		if !allowed {
			err = errors.New("read access to the exchange refused")
		} else {
			if f.Identifier == 0 && pk.Properties.SubscriptionIdentifier != nil && len(pk.Properties.SubscriptionIdentifier) > 0 {
				f.Identifier = pk.Properties.SubscriptionIdentifier[0]
			}
			err = x.bind(f)
		}
		x.mu.Lock()
		if err != nil {
			x.refused[f.Filter] = true
		} else {
			delete(x.refused, f.Filter)
		}
		x.mu.Unlock()
		if err != nil {
			x.s.log.Info("mqtt subscription refused", zap.String("client_id", x.clientID),
				zap.String("filter", f.Filter), zap.Error(err))
		}
	}
}

func isShared(filter string) bool { _, _, ok := splitShared(filter); return ok }

// bind adds one subscription: a binding of the session queue, or a consumer on the shared
// group's queue.
func (x *session) bind(f packets.Subscription) error {
	qos := min(f.Qos, 2)
	if group, filter, ok := splitShared(f.Filter); ok {
		return x.bindShared(f, group, filter, qos)
	}
	args := message.Table{argFilter: f.Filter, argQoS: int32(qos)}
	if f.Identifier > 0 {
		args[argSubID] = int32(f.Identifier)
	}
	if f.NoLocal {
		args[argNoLocal] = true
	}
	if f.RetainAsPublished {
		args[argRAP] = true
	}
	key := FilterToBindingKey(f.Filter)
	if err := x.ensureQueue(); err != nil {
		return err
	}
	if err := x.v.Bind(meta.BindingDef{Source: x.s.cfg.Exchange, Dest: destQueue(x.q.Name()), Key: key, Args: args}, 0); err != nil {
		return err
	}
	sub := &subscription{filter: f.Filter, match: f.Filter, qos: qos, id: f.Identifier, noLocal: f.NoLocal,
		rap: f.RetainAsPublished, args: args}
	x.mu.Lock()
	old := x.subs[f.Filter]
	x.subs[f.Filter] = sub
	// Retain handling 0 sends the retained messages on every SUBSCRIBE, 1 only for a new
	// subscription, 2 never [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]. (Shared
	// subscriptions get none.)
	send := f.RetainHandling == 0 || (f.RetainHandling == 1 && old == nil)
	x.mu.Unlock()
	if send {
		// The retained messages as of the SUBSCRIBE (the binding is in place): one
		// published after it reaches the subscription live, not also as retained, even when
		// it comes before the SUBACK is written.
		msgs := x.v.RetainedMessages(func(topic string) bool { return matchFilter(sub.match, topic) })
		x.mu.Lock()
		x.retainFor = append(x.retainFor, retainedFor{sub: sub, msgs: msgs})
		x.mu.Unlock()
	}
	if old != nil && old.shared == nil && !sameArgs(old.args, args) {
		// A new SUBSCRIBE for the same filter replaces the old subscription [MQTT-3.8.4-3];
		// the new binding is in place first, so nothing published meanwhile is missed.
		_ = x.v.Unbind(meta.BindingDef{Source: x.s.cfg.Exchange, Dest: destQueue(x.q.Name()), Key: key, Args: old.args}, 0)
	}
	return nil
}

func sameArgs(a, b message.Table) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// subscribed ends a SUBSCRIBE's bookkeeping.
func (x *session) subscribed(pk packets.Packet, _ []byte) {
	x.mu.Lock()
	for _, f := range pk.Filters {
		delete(x.refused, f.Filter)
	}
	x.mu.Unlock()
}

// unsubscribe removes each filter's binding, or this session's consumer of a shared group.
func (x *session) unsubscribe(pk packets.Packet) {
	for _, f := range pk.Filters {
		x.mu.Lock()
		sub := x.subs[f.Filter]
		delete(x.subs, f.Filter)
		x.mu.Unlock()
		if sub == nil {
			continue
		}
		if sub.shared != nil {
			sub.shared.cancel()
			// The record first: the group's queue goes with its last member, connected or
			// not (leaveShare).
			x.setState(stateSharePrefix+sub.filter, nil)
			x.s.leaveShare(sub.shared)
			continue
		}
		if x.q == nil {
			continue
		}
		err := x.v.Unbind(meta.BindingDef{Source: x.s.cfg.Exchange, Dest: destQueue(x.q.Name()),
			Key: FilterToBindingKey(sub.filter), Args: sub.args}, 0)
		if err != nil {
			x.s.log.Info("mqtt unsubscribe", zap.String("client_id", x.clientID), zap.Error(err))
		}
	}
}

// close ends this connection's part of the session.
func (x *session) close(cause error) {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return
	}
	x.closed = true
	var consumers []*consumer
	if x.main != nil {
		consumers = append(consumers, x.main)
	}
	for _, sub := range x.subs {
		if sub.shared != nil {
			consumers = append(consumers, sub.shared)
		}
	}
	x.mu.Unlock()
	// What the client acknowledged is settled before anything goes back to a queue.
	x.flushAcks()
	// No delivery starts after Cancel returns; Deliver requeues what races with it.
	for _, c := range consumers {
		c.cancel()
		if c.sub != nil {
			x.s.leaveShare(c)
		}
	}
	x.wg.Wait()
	x.mu.Lock()
	back := map[*broker.Queue][]queue.DeliveryID{}
	for _, p := range x.pending {
		if p.c != nil {
			back[p.c.q] = append(back[p.c.q], p.d.ID)
		}
	}
	x.pending = nil
	var sent map[uint64]uint16
	for id, m := range x.inflight {
		// Released QoS 2 deliveries (PUBREC came) are settled already; a persistent session's
		// next connection sends their PUBREL again from its "out:" records.
		if !m.released && m.c != nil {
			back[m.c.q] = append(back[m.c.q], m.d)
			if m.ref != 0 && x.persistent {
				if sent == nil {
					sent = map[uint64]uint16{}
				}
				sent[m.ref] = id
			}
		}
	}
	x.inflight = map[uint16]outMsg{}
	x.mu.Unlock()
	if sent != nil {
		// Before the requeue: the next connection, maybe already here, must know them when
		// the messages come back.
		x.s.handOverIDs(x, sent)
	}
	for q, ids := range back {
		q.Settle(ids, queue.Requeue)
	}
	s := x.s
	s.mu.Lock()
	current := s.current[x.clientID] == x
	if current {
		delete(s.current, x.clientID)
	}
	closing := s.reg.Closed()
	s.mu.Unlock()
	if closing {
		if !x.persistent && x.q != nil {
			x.v.DeleteQueueIf(x.q)
		}
		// A shutdown: a persistent session's record still says connected, with its will,
		// which the restart treats as a connection that died with the broker.
		return
	}
	if x.persistent && current && x.version == 5 {
		x.disconnectExpiry()
	}
	if (!x.persistent || (x.endsAtClose && current)) && x.q != nil {
		x.v.DeleteQueueIf(x.q)
		if x.persistent && hadShared(consumers) {
			// Its shared subscriptions end with it: a group it kept alone goes too.
			s.sweepShares()
		}
	}
	if x.endsAtClose && x.will != nil {
		x.will.WillDelayInterval = 0 // the session ends now, and the will goes with it [MQTT-3.1.3-9]
	}
	willLater := cause != nil && x.will != nil && x.will.WillDelayInterval > 0
	if x.persistent && current && !x.endsAtClose {
		r := connRecord{left: true, at: time.Now().UnixMilli(), node: s.cfg.NodeID, expiry: x.expiryMs, hasExpiry: true}
		if willLater {
			r.will, r.delay = willMessage(s.cfg.Exchange, x.clientID, *x.will, x.willProps), x.will.WillDelayInterval
		}
		x.setState(stateConn, r.encode())
	}
	if cause != nil && x.will != nil && (current || !willLater) {
		// A connection taken over has its successor: a delayed will is cancelled by it
		// [MQTT-3.1.3-9].
		x.sendWill()
	}
}

func hadShared(cs []*consumer) bool {
	for _, c := range cs {
		if c.sub != nil {
			return true
		}
	}
	return false
}

// disconnectExpiry applies the session expiry a DISCONNECT set (mochi has checked it and
// put it in the client's properties; from 0 to non-zero it answers 0x82 itself, MQTT 5
// §3.14.2.2.2): 0 ends the session with this connection, another value replaces the one
// of the CONNECT. A delayed will goes no later than the session ends [MQTT-3.1.3-9].
func (x *session) disconnectExpiry() {
	e := x.cl.Properties.Props.SessionExpiryInterval
	if limit := x.s.cfg.MaxSessionExpiry; limit > 0 && e > limit {
		e = limit
	}
	if e == 0 {
		x.endsAtClose = true
		return
	}
	x.expiryMs = 0
	if e != 0xFFFFFFFF {
		x.expiryMs = int64(e) * 1000
	}
	if x.q != nil {
		x.q.SetExpires(x.expiryMs)
	}
	if x.will != nil && e < x.will.WillDelayInterval {
		x.will.WillDelayInterval = e
	}
}

// sendWill publishes the will through the core, now or after the MQTT 5 will delay.
func (x *session) sendWill() {
	w := *x.will
	s := x.s
	left := time.Now().UnixMilli()
	publish := func() {
		publishWill(s, x.v, x.clientID, willMessage(s.cfg.Exchange, x.clientID, w, x.willProps))
		if w.WillDelayInterval > 0 {
			s.mu.Lock()
			back := s.current[x.clientID] != nil
			s.mu.Unlock()
			if !back {
				x.setState(stateConn, connRecord{left: true, at: left, node: s.cfg.NodeID, expiry: x.expiryMs, hasExpiry: true}.encode()) // sent
			}
		}
	}
	if w.WillDelayInterval == 0 {
		publish()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.wills[x.clientID]; ok {
		old.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(time.Duration(w.WillDelayInterval)*time.Second, func() {
		s.mu.Lock()
		cur := s.wills[x.clientID]
		if cur == t {
			delete(s.wills, x.clientID)
		}
		s.mu.Unlock()
		if cur == t {
			publish()
		}
	})
	s.wills[x.clientID] = t
}
