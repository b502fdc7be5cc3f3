package mqtt

// What a persistent session keeps in the core besides its messages and subscriptions. It lives
// in the session queue's state records (broker Queue.SetState): for a durable session queue
// they are entries in its log, so they survive a restart and a kill -9, are replicated with the
// queue, and go when the session (its queue) is deleted or expires. A change that a message's
// fate depends on (a connection's will, an accepted QoS 2 publish) is written before the packet
// that follows it goes out; the others are not waited for (setStateLater).
//
//   - "conn": the connection. While connected: the connect time and the will, so a will whose
//     connection died with the broker is published after the restart, after its delay
//     [MQTT-3.1.3-9] (and no later than the session's end). Once left: the time it left, so the
//     session expiry counts from then across a restart, and a delayed will not yet published.
//   - "in:<id>": an inbound QoS 2 publish, from before it is published until PUBREL. After a
//     reconnect or a restart a PUBLISH sent again with that identifier is recognised as the
//     same message, and PUBREL completes it [MQTT-4.3.3-10] [MQTT-4.4.0-1]. It is written
//     pending (with where the destination queues' logs stood) before the publish and marked
//     done (empty) after it, so a crash between the two is settled at the restart from the
//     queues' logs (qos2in.go).
//   - "out:<id>": an outbound QoS 2 delivery whose PUBREC came (the core has settled it), until
//     PUBCOMP: the next connection sends PUBREL for it again [MQTT-4.4.0-1]. (Deleting an
//     "in:" record at PUBREL is not waited for either; newFlow copes with a stale one.)
//   - "share:<filter>": a shared subscription, so it is resumed with the session.
//
// Clean sessions keep these in memory only (mochi's in-flight table, the session struct): they
// end with their connection.
//
// Deviation from DESIGN.md §3, which puts MQTT session records in the metadata state machine:
// these records live in the session queue's own raft group instead. Group 0 appends the whole
// metadata per change, which a write per QoS 2 publish and per connect cannot afford; in the
// queue's group a record costs one small entry, group-committed with the queue's messages, and
// goes when the queue (the session) is deleted or expires. The session itself (queue, bindings)
// is still metadata, as DESIGN.md says.

import (
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/message"
)

const (
	stateConn        = "conn"
	stateInPrefix    = "in:"
	stateOutPrefix   = "out:"
	stateSharePrefix = "share:"
)

// stateTimeout bounds one state write (a log append, fsync and replication).
const stateTimeout = 30 * time.Second

// connRecord is the "conn" record.
type connRecord struct {
	left  bool   // the connection has ended; false: it was live when last written
	at    int64  // Unix ms: when it connected, or when it left
	node  string // the node that served the connection (the node serving next publishes its will)
	will  *message.Message
	delay uint32 // will delay interval, seconds
	// expiry is the session expiry in ms (0: never) as the last CONNECT or DISCONNECT set it
	// [MQTT-3.1.2-23] (MQTT 5 §3.14.2.2.2); hasExpiry false for records written before it was kept
	// (the queue's x-expires applies then).
	expiry    int64
	hasExpiry bool
}

// connFlag* are the bits of a conn record's first byte.
const (
	connFlagLeft   = 1
	connFlagExpiry = 2
)

// encode: flags (connFlag*), at (8 bytes), the node (a length byte and the id), the expiry
// (8 bytes) when connFlagExpiry, then, with a will, the delay (4 bytes) and the will as a core
// message.
func (r connRecord) encode() []byte {
	buf := make([]byte, 0, 40)
	var flags byte
	if r.left {
		flags |= connFlagLeft
	}
	if r.hasExpiry {
		flags |= connFlagExpiry
	}
	buf = append(buf, flags)
	buf = binary.BigEndian.AppendUint64(buf, uint64(r.at))
	node := r.node[:min(len(r.node), 255)]
	buf = append(buf, byte(len(node)))
	buf = append(buf, node...)
	if r.hasExpiry {
		buf = binary.BigEndian.AppendUint64(buf, uint64(r.expiry))
	}
	if r.will != nil {
		n := len(buf)
		buf = binary.BigEndian.AppendUint32(buf, r.delay)
		if b, err := message.AppendBinary(buf, r.will); err == nil {
			buf = b
		} else {
			buf = buf[:n]
		}
	}
	return buf
}

func decodeConnRecord(b []byte) (connRecord, bool) {
	if len(b) < 10 || b[0] > connFlagLeft|connFlagExpiry || len(b) < 10+int(b[9]) {
		return connRecord{}, false
	}
	r := connRecord{left: b[0]&connFlagLeft != 0, hasExpiry: b[0]&connFlagExpiry != 0, at: int64(binary.BigEndian.Uint64(b[1:9]))}
	r.node, b = string(b[10:10+int(b[9])]), b[10+int(b[9]):]
	if r.hasExpiry {
		if len(b) < 8 {
			return connRecord{}, false
		}
		r.expiry, b = int64(binary.BigEndian.Uint64(b[:8])), b[8:]
	}
	if len(b) == 0 {
		return r, true
	}
	if len(b) < 4 {
		return connRecord{}, false
	}
	r.delay = binary.BigEndian.Uint32(b[:4])
	m, rest, err := message.DecodeBinary(append([]byte(nil), b[4:]...))
	if err != nil || len(rest) != 0 {
		return connRecord{}, false
	}
	r.will = m
	return r, true
}

// setState writes one state record of a persistent session (nil val deletes it). Transient
// sessions keep nothing.
func (x *session) setState(key string, val []byte) {
	if !x.persistent || x.q == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	if err := x.q.SetState(ctx, key, val); err != nil {
		x.s.log.Warn("mqtt session state not stored", zap.String("client_id", x.clientID),
			zap.String("record", key), zap.Error(err))
	}
}

// setStateLater is setState without waiting for the write, for records whose loss in a crash
// costs no message (see released and the outbound records).
func (x *session) setStateLater(key string, val []byte) {
	if !x.persistent || x.q == nil {
		return
	}
	x.q.SetStateAsync(key, val)
}

// saveConnected records the live connection and its will, before the CONNACK.
func (x *session) saveConnected() {
	r := connRecord{at: time.Now().UnixMilli(), node: x.s.cfg.NodeID, expiry: x.expiryMs, hasExpiry: true}
	if x.will != nil {
		r.will, r.delay = willMessage(x.s.cfg.Exchange, x.clientID, *x.will, x.willProps), x.will.WillDelayInterval
	}
	x.setState(stateConn, r.encode())
}

func packetIDKey(prefix string, id uint16) string { return prefix + strconv.Itoa(int(id)) }

// restoreInflight puts the inbound QoS 2 identifiers awaiting PUBREL back into mochi's
// in-flight table of the new connection, so a PUBLISH sent again is a duplicate and PUBREL
// completes it; and returns the outbound identifiers awaiting PUBCOMP.
func (x *session) restoreInflight(state map[string][]byte) (pubrels []uint16) {
	for k := range state {
		var prefix string
		switch {
		case strings.HasPrefix(k, stateInPrefix):
			prefix = stateInPrefix
		case strings.HasPrefix(k, stateOutPrefix):
			prefix = stateOutPrefix
		default:
			continue
		}
		n, err := strconv.ParseUint(k[len(prefix):], 10, 16)
		if err != nil || n == 0 {
			continue
		}
		id := uint16(n)
		if prefix == stateOutPrefix {
			pubrels = append(pubrels, id)
			continue
		}
		x.mu.Lock()
		x.inbound[id] = true
		x.restored[id] = true
		x.mu.Unlock()
		x.cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
			PacketID: id, Created: time.Now().Unix()})
	}
	return pubrels
}

// acceptedQoS2 marks an inbound QoS 2 publish the core accepted, before mochi's PUBREC: a
// persistent session's record (written pending before the publish, qos2in.go) is marked done.
// Not waited for: a restart finds a record still pending and settles it from the queues' logs.
func (x *session) acceptedQoS2(id uint16) {
	if !x.persistent {
		return
	}
	x.crashAt("after-publish")
	x.mu.Lock()
	x.inbound[id] = true
	x.mu.Unlock()
	x.setStateLater(packetIDKey(stateInPrefix, id), []byte{})
}

// released forgets an inbound QoS 2 identifier at PUBREL. The record's deletion is not
// waited for: if a crash loses it, the record comes back stale after the restart, and
// newFlow tells a new message under that identifier from the old one sent again.
func (x *session) released(id uint16) {
	x.mu.Lock()
	had := x.inbound[id]
	delete(x.inbound, id)
	delete(x.restored, id)
	x.mu.Unlock()
	if had {
		x.setStateLater(packetIDKey(stateInPrefix, id), nil)
	}
}

// newFlow handles a QoS 2 PUBLISH under an identifier restored from the session's records:
// sent again (DUP) it is the message the records speak of, answered with PUBREC and not
// delivered again; without DUP it is a new message [MQTT-3.3.1-1] (a client reuses an
// identifier only after PUBCOMP, so the record was stale), and mochi must not take it for a
// duplicate.
func (x *session) newFlow(pk packets.Packet) {
	if pk.FixedHeader.Dup {
		return
	}
	x.mu.Lock()
	stale := x.restored[pk.PacketID]
	delete(x.restored, pk.PacketID)
	x.mu.Unlock()
	if stale {
		x.cl.State.Inflight.Delete(pk.PacketID)
	}
}

// shareRecord encodes a shared subscription's options: QoS, then the subscription identifier.
func shareRecord(qos byte, id int) []byte {
	return binary.AppendUvarint([]byte{qos}, uint64(id))
}

// resumeShared joins again the shared subscriptions the session had.
func (x *session) resumeShared(state map[string][]byte) {
	for k, v := range state {
		filter, ok := strings.CutPrefix(k, stateSharePrefix)
		if !ok || len(v) < 1 {
			continue
		}
		group, match, ok := splitShared(filter)
		if !ok {
			continue
		}
		id, _ := binary.Uvarint(v[1:])
		if err := x.bindShared(packets.Subscription{Filter: filter, Qos: v[0], Identifier: int(id)}, group, match, min(v[0], 2)); err != nil {
			x.s.log.Warn("mqtt shared subscription not resumed", zap.String("client_id", x.clientID),
				zap.String("filter", filter), zap.Error(err))
		}
	}
}

// recoverSessions runs once at start: the persistent sessions found in the core get their
// expiry counted from when their connection ended, and the wills of connections that died with
// the broker (or were waiting for their delay) are published in due time.
//
// In a cluster that includes the connections of another node: one node serves the clients at a
// time (cmd/parley/cluster.go), and this one starts serving only once the node that served
// before is dead, cut off or has stopped serving, and with it every connection it had. So a
// session whose record names another node, still connected or with a delayed will pending, is
// one whose connection that node lost: its will is this node's to publish, after its delay
// counted from now (for a connection live at the failover) or from when it left. The record is
// taken over at once (left now, this node) and marks the will sent once published, so the node
// that comes back publishes nothing, and a node taking over after this one does not count the
// delay again. (A will is published at least once: a crash between the publish and the record
// publishes it again.)
func (s *Server) recoverSessions() {
	v, ok := s.b.VHost(s.cfg.VHost)
	if !ok {
		return
	}
	now := time.Now().UnixMilli()
	for _, q := range v.QueuesWithPrefix(sessionQueuePrefix) {
		if !q.Def().Durable {
			continue
		}
		r, ok := decodeConnRecord(q.State()[stateConn])
		if !ok {
			continue
		}
		clientID := strings.TrimPrefix(q.Name(), sessionQueuePrefix)
		s.recoverQoS2(v, q, q.State())
		if r.hasExpiry {
			// The expiry the client last asked for, not the one the queue was declared with.
			q.SetExpires(r.expiry)
		}
		if !r.left {
			// Live when the broker (or the node serving it) went down: its connection ended
			// then; the restart or failover is the closest time known.
			r.left, r.at = true, now
			if r.will != nil {
				if r.node != s.cfg.NodeID {
					s.log.Info("mqtt will of a connection to a node that stopped serving taken over",
						zap.String("client_id", clientID), zap.String("node", r.node))
				}
				r.node = s.cfg.NodeID
				q.SetStateAsync(stateConn, r.encode())
			}
		} else {
			q.SetIdleSince(r.at)
		}
		if r.will == nil {
			continue
		}
		r.node = s.cfg.NodeID
		delay := int64(r.delay) * 1000
		exp, ok := message.Int(q.Def().Args["x-expires"])
		if r.hasExpiry {
			exp, ok = r.expiry, r.expiry > 0
		}
		if ok && exp < delay {
			delay = exp // the will goes at the latest when the session ends [MQTT-3.1.3-9]
		}
		s.scheduleWill(v, q, clientID, r, time.Duration(max(0, r.at+delay-now))*time.Millisecond)
	}
}

// scheduleWill publishes a recovered will after wait, unless the client connects first, and
// then records it as sent.
func (s *Server) scheduleWill(v *broker.VHost, q *broker.Queue, clientID string, r connRecord, wait time.Duration) {
	publish := func() {
		publishWill(s, v, clientID, r.will)
		r.will = nil
		ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
		defer cancel()
		if err := q.SetState(ctx, stateConn, r.encode()); err != nil {
			s.log.Warn("mqtt will sent but not recorded as sent", zap.String("client_id", clientID), zap.Error(err))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var t *time.Timer
	t = time.AfterFunc(wait, func() {
		s.mu.Lock()
		cur := s.wills[clientID]
		if cur == t {
			delete(s.wills, clientID)
		}
		s.mu.Unlock()
		if cur == t {
			publish()
		}
	})
	s.wills[clientID] = t
}

// publishWill sends a will (a core message) through the exchange, storing it as the topic's
// retained message first when it has the retain flag.
func publishWill(s *Server, v *broker.VHost, clientID string, m *message.Message) {
	if retain, _ := m.Properties.Headers[hdrRetain].(bool); retain {
		keep := retainedCopy(m, time.Now())
		if len(m.Body) == 0 {
			keep = nil
		}
		if err := v.SetRetained(RoutingKeyToTopic(m.RoutingKey), keep); err != nil {
			s.log.Warn("mqtt retained will not stored", zap.String("client_id", clientID), zap.Error(err))
		}
	}
	if _, err := v.Publish(m, nil, nil); err != nil {
		s.log.Info("mqtt will not published", zap.String("client_id", clientID), zap.Error(err))
	}
}

// forgetClient drops mochi's record of a client whose connection has ended. Parley keeps
// sessions in the core, so mochi needs none, and a fleet reconnecting under ever new client
// ids must not grow its client map and subscription index without bound. A client taken over
// by a new connection has been replaced already (sess, its session if it had one, says so).
func (s *Server) forgetClient(cl *mochi.Client, sess *session) {
	if sess != nil && sess.takenOver.Load() {
		return
	}
	if cur, ok := s.m.Clients.Get(cl.ID); ok && cur == cl {
		s.m.UnsubscribeClient(cl)
		cl.ClearInflights()
		s.m.Clients.Delete(cl.ID)
	}
}

// handOverIDs passes the packet identifiers of x's unacknowledged deliveries to the session's
// next connection: the current one if it took over already, else the next to come. In memory;
// the session queue's per-message records have them too (packetids.go), for after a restart. Clients whose
// session is gone are swept out now and then, so abandoned sessions do not pile up.
func (s *Server) handOverIDs(x *session, ids map[uint64]uint16) {
	s.mu.Lock()
	next := s.current[x.clientID]
	if next == nil || next == x {
		s.sentIDs[x.clientID] = ids
		if len(s.sentIDs) > 1024 && len(s.sentIDs)&1023 == 0 {
			for id := range s.sentIDs {
				if _, ok := x.v.LookupQueue(sessionQueuePrefix + id); !ok {
					delete(s.sentIDs, id)
				}
			}
		}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	next.mu.Lock()
	if next.prevIDs == nil {
		next.prevIDs = map[uint64]uint16{}
	}
	for ref, id := range ids {
		next.prevIDs[ref] = id
	}
	next.reserveLocked()
	next.mu.Unlock()
}
