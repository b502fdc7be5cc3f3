package mqtt

// Packet identifiers of outbound QoS 1 and 2 deliveries of a persistent session. A message
// sent and not acknowledged when the connection ends goes out again, on the session's next
// connection, under the identifier it had [MQTT-4.4.0-1] with DUP set [MQTT-3.3.1-1]: a QoS 2
// receiver that sent PUBREC for it knows it is the same message and does not deliver it twice
// [MQTT-4.3.3-10].
//
// So the identifier is stored with the delivery before the PUBLISH is written: a per-message
// record of the session queue (broker Queue.SetRefStates), one log entry for all the
// deliveries of a writer batch. A batch with a QoS 2 message waits for the entry to commit
// before it goes out, so a QoS 2 message never reaches the client under an identifier a crash
// could lose. A batch of QoS 1 messages does not wait (the entry is proposed before the
// PUBLISH is written, and commits a disk sync later): a crash in between costs such a message
// its identifier, and QoS 1 allows the duplicate that is then (waiting made persistent QoS 1
// deliveries about 2.5 times slower, docs/performance.md). The record is tied to the
// message and goes when the message leaves the queue (its PUBACK, or the PUBREC of QoS 2), with
// no write of its own. After a restart, kill -9 included, the records say which identifier
// each unacknowledged message had; a reconnect within the same process also has them in memory
// (Server.sentIDs), from before the records of the last batch committed.
//
// An identifier a message is waiting to be sent again under is not given to another message
// meanwhile (reserved): a QoS 2 receiver still holding it (PUBREC sent, PUBREL not yet seen)
// would take the other message for a duplicate.

import (
	"context"
	"encoding/binary"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
)

// loadSentIDs adds the identifiers recorded with the session queue's unacknowledged messages
// (after a restart the only ones known) to those handed over in memory.
func (x *session) loadSentIDs() {
	if !x.persistent || x.q == nil || !x.present {
		return
	}
	recs := x.q.RefStates()
	x.mu.Lock()
	defer x.mu.Unlock()
	for ref, v := range recs {
		if len(v) != 2 {
			continue
		}
		id := binary.BigEndian.Uint16(v)
		if id == 0 {
			continue
		}
		if x.recorded == nil {
			x.recorded = map[uint64]uint16{}
		}
		x.recorded[ref] = id
		if _, ok := x.prevIDs[ref]; !ok {
			if x.prevIDs == nil {
				x.prevIDs = map[uint64]uint16{}
			}
			x.prevIDs[ref] = id
		}
	}
	x.reserveLocked()
}

// reserveLocked rebuilds the set of identifiers prevIDs holds. x.mu held.
func (x *session) reserveLocked() {
	if len(x.prevIDs) == 0 {
		x.reserved = nil
		return
	}
	x.reserved = make(map[uint16]bool, len(x.prevIDs))
	for _, id := range x.prevIDs {
		x.reserved[id] = true
	}
}

// idForLocked picks the identifier for a delivery of the message ref: the one it was sent
// under before (again true), unless that is in flight, or a new one. x.mu held.
func (x *session) idForLocked(ref uint64) (id uint16, again bool) {
	if prev, ok := x.prevIDs[ref]; ok && ref != 0 {
		delete(x.prevIDs, ref)
		delete(x.reserved, prev)
		if _, busy := x.inflight[prev]; !busy {
			return prev, true
		}
	}
	return x.nextPacketID(), false
}

// nextPacketID returns an identifier neither in flight nor reserved. x.mu held. Credit bounds
// the in-flight count well below 65535; reservations are left out of the search if they leave
// none free.
func (x *session) nextPacketID() uint16 {
	for i := 0; ; i++ {
		x.nextID++
		if x.nextID == 0 {
			x.nextID = 1
		}
		if _, busy := x.inflight[x.nextID]; busy {
			continue
		}
		if x.reserved[x.nextID] && i < 1<<16 {
			continue
		}
		return x.nextID
	}
}

// recordIDs picks the identifiers of a writer batch's deliveries from the session queue and
// stores those not stored yet, in one entry, before the batch is written. Each picked
// identifier is held in flight (an empty outMsg) until write fills it in or frees it.
func (x *session) recordIDs(batch []outDelivery) {
	if !x.persistent || x.q == nil {
		return
	}
	var recs []broker.RefState
	wait := false
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return
	}
	for i := range batch {
		p := &batch[i]
		if p.c == nil || p.c.sub != nil || p.c.q != x.q || p.d.Ref == 0 {
			continue
		}
		qos := byte(2) // a stub's message: its QoS is not known here
		if p.d.Msg != nil {
			qos = inboundInfo(p.d.Msg).qos
		}
		if qos == 0 {
			continue // goes out at QoS 0 whatever the subscription
		}
		id, again := x.idForLocked(p.d.Ref)
		p.pid, p.again = id, again
		x.inflight[id] = outMsg{}
		if x.recorded[p.d.Ref] != id {
			if x.recorded == nil {
				x.recorded = map[uint64]uint16{}
			}
			x.recorded[p.d.Ref] = id
			recs = append(recs, broker.RefState{Ref: p.d.Ref, Val: binary.BigEndian.AppendUint16(nil, id)})
			wait = wait || qos == 2
		}
	}
	x.mu.Unlock()
	if len(recs) == 0 {
		return
	}
	if !wait {
		x.q.SetRefStatesAsync(recs)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	if err := x.q.SetRefStates(ctx, recs); err != nil {
		// Sent all the same: only a crash before the next connection would then give these
		// messages new identifiers.
		x.s.log.Warn("mqtt packet identifiers not stored", zap.String("client_id", x.clientID), zap.Error(err))
	}
}

// freePicked releases the identifier recordIDs held for a delivery that is not sent with QoS
// 1 or 2 after all.
func (x *session) freePicked(p outDelivery) {
	if p.pid == 0 {
		return
	}
	x.mu.Lock()
	if m, ok := x.inflight[p.pid]; ok && m.c == nil {
		delete(x.inflight, p.pid)
	}
	x.mu.Unlock()
}
