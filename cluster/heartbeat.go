package cluster

// Coalesced heartbeats (DESIGN.md §5: "heartbeats are coalesced").
//
// A group that is awake heartbeats each follower every HeartbeatTicks, and each follower answers:
// with a thousand awake groups between two nodes that is a thousand MsgHeartbeat and a thousand
// MsgHeartbeatResp per tick and direction, each a protobuf encoded, framed, decoded and queued
// on its own. Quiescence (quiesce.go) makes idle groups free; this makes the awake ones cheap,
// which matters when many groups are awake at once (a busy broker, every group for a few ticks
// around a node's loss or return, or a trickle of messages over many queues).
//
// The idea is CockroachDB's: a heartbeat carries nothing but its group, its term and a commit
// index, and the sender and receiver are the two ends of the connection, so every heartbeat a
// cycle produces for one peer goes out as one Heartbeat list in one frame (kindHeartbeats,
// below), and the receiver expands the list back into the very raft messages that were
// coalesced and steps each into its group, exactly as if they had come one by one. Raft's
// semantics are kept because nothing is interpreted on the way: the commit index is the one raft
// put in the heartbeat (min(the follower's match, the leader's commit), so a follower never
// learns a commit index past what it has), a response names its group, and a heartbeat or
// response that carries anything else (a read-index context, the host's quiesce and wake
// messages, which carry contexts too) is not coalesced but sent as it is.
//
// When: the host collects the coalescible heartbeats of every Ready of a cycle (scheduler.go)
// and hands the transport one list per peer at the end of the cycle's sends. A tick gives every
// awake leader its heartbeats in the same cycle, and the heartbeats of one frame are stepped in
// one turn of the receiver's loop, so their responses leave in one frame too: one frame each
// way per peer per heartbeat interval, however many groups are awake. A heartbeat list follows
// its groups' other messages of the cycle on the connection, as the single heartbeats did.
//
// Only a transport that implements HeartbeatTransport gets lists (TCPTransport, LocalNetwork);
// any other Transport gets the single messages. TCPTransport sends a list only to a peer whose
// hello offers them (metaBeats), and the messages it stands for to an older peer, so the wire
// version stays the same and nodes of both kinds can run in one cluster. A list that cannot be delivered is dropped
// without reporting its groups unreachable: a lost heartbeat is what raft expects, and the next
// one follows a heartbeat interval later.

import (
	"encoding/binary"
	"fmt"

	"go.etcd.io/raft/v3/raftpb"
)

// metaBeats is the hello key by which a node says it reads kindHeartbeats frames.
const metaBeats = "beats"

// metaLease is the hello key by which a node says it reads lease probes and echoes in its
// heartbeat lists (lease.go).
const metaLease = "lease"

// Heartbeat is one group's MsgHeartbeat (Resp false) or MsgHeartbeatResp (Resp true), coalesced
// with the others a node sends to one peer in one cycle; From and To are the two nodes.
//
// A lease probe or its echo (Lease true, lease.go) is not a raft message: Term carries the
// probe's stamp and Group and Commit are unused; Resp marks the echo.
type Heartbeat struct {
	Group, Term uint64
	// Commit is the heartbeat's commit index (0 in a response).
	Commit uint64
	Resp   bool
	Lease  bool
}

// HeartbeatTransport is a Transport that carries coalesced heartbeats: SendHeartbeats sends
// beats from this node to node to, as one message, and the receiving side hands them to the
// destination host's ReceiveHeartbeats. It must not block, like Send.
type HeartbeatTransport interface {
	Transport
	SendHeartbeats(to uint64, beats []Heartbeat)
}

// beatOf returns m as a Heartbeat when it is a heartbeat or heartbeat response that carries
// nothing but its group, term and commit index (see the file comment).
func beatOf(group uint64, m *raftpb.Message) (Heartbeat, bool) {
	var resp bool
	switch m.GetType() {
	case raftpb.MsgHeartbeat:
	case raftpb.MsgHeartbeatResp:
		resp = true
	default:
		return Heartbeat{}, false
	}
	if len(m.GetContext()) != 0 || m.GetLogTerm() != 0 || m.GetIndex() != 0 || len(m.GetEntries()) != 0 ||
		m.GetVote() != 0 || m.Snapshot != nil || m.GetReject() || m.GetRejectHint() != 0 ||
		len(m.GetResponses()) != 0 || (resp && m.GetCommit() != 0) {
		return Heartbeat{}, false
	}
	return Heartbeat{Group: group, Term: m.GetTerm(), Commit: m.GetCommit(), Resp: resp}, true
}

// message is the raft message b stands for, from node from to node to.
func (b Heartbeat) message(from, to uint64) *raftpb.Message {
	m := &raftpb.Message{
		Type: raftpb.MsgHeartbeat.Enum(),
		To:   new(to),
		From: new(from),
		Term: new(b.Term),
	}
	if b.Resp {
		m.Type = raftpb.MsgHeartbeatResp.Enum()
	} else {
		m.Commit = new(b.Commit)
	}
	return m
}

// coalesce takes the coalescible heartbeats out of msgs, group's messages of this cycle, into
// the cycle's lists per peer, and returns the others; loop only.
func (h *Host) coalesce(group uint64, msgs []*raftpb.Message) []*raftpb.Message {
	if h.beatTr == nil {
		return msgs
	}
	var rest []*raftpb.Message
	for i, m := range msgs {
		b, ok := beatOf(group, m)
		if ok {
			if rest == nil {
				// raft owns msgs: the others go into a new slice.
				rest = make([]*raftpb.Message, i, len(msgs))
				copy(rest, msgs[:i])
			}
			if h.beats == nil {
				h.beats = make(map[uint64][]Heartbeat)
			}
			h.beats[m.GetTo()] = append(h.beats[m.GetTo()], b)
			continue
		}
		if rest != nil {
			rest = append(rest, m)
		}
	}
	if rest == nil {
		return msgs
	}
	return rest
}

// flushBeats hands the transport the cycle's heartbeat lists, one per peer; loop only.
func (h *Host) flushBeats() {
	for to, beats := range h.beats {
		if len(beats) == 0 {
			continue
		}
		h.m.beatsSent.Add(uint64(raftBeats(beats)))
		h.m.beatLists.Add(1)
		h.beatTr.SendHeartbeats(to, beats)
		// The transport keeps the list until it is written: the next cycle starts a new one.
		h.beats[to] = make([]Heartbeat, 0, len(beats))
	}
}

// raftBeats is how many of beats are raft heartbeats (not lease probes or echoes): what the
// counters of raft messages count.
func raftBeats(beats []Heartbeat) int {
	n := 0
	for _, b := range beats {
		if !b.Lease {
			n++
		}
	}
	return n
}

// ReceiveHeartbeats hands the host the heartbeats node from coalesced into one message: each
// is stepped into its group as the raft message it stands for. The transport calls it; it never
// blocks, and heartbeats for a group this host does not run are dropped.
func (h *Host) ReceiveHeartbeats(from uint64, beats []Heartbeat) {
	select {
	case <-h.donec:
		return
	default:
	}
	// One allocation for the messages and one for their fields (raftpb's fields are pointers),
	// not five per heartbeat: a list carries a tick's worth of every awake group.
	self := h.cfg.NodeID
	msgs := make([]raftpb.Message, len(beats))
	vals := make([]uint64, 4*len(beats))
	types := make([]raftpb.MessageType, len(beats))
	h.inMu.Lock()
	for i, b := range beats {
		if b.Lease {
			// In the list's order: a probe is echoed after what came before it is stepped.
			r := reportLeaseProbe
			if b.Resp {
				r = reportLeaseEcho
			}
			h.incoming = append(h.incoming, incomingMsg{to: from, report: r, stamp: b.Term})
			continue
		}
		v := vals[4*i : 4*i+4 : 4*i+4]
		v[0], v[1], v[2], v[3] = from, self, b.Term, b.Commit
		m := &msgs[i]
		m.From, m.To, m.Term, m.Type = &v[0], &v[1], &v[2], &types[i]
		if b.Resp {
			types[i] = raftpb.MsgHeartbeatResp
		} else {
			types[i] = raftpb.MsgHeartbeat
			m.Commit = &v[3]
		}
		h.incoming = append(h.incoming, incomingMsg{group: b.Group, msg: m})
	}
	h.inMu.Unlock()
	h.poke()
}

// The kindHeartbeats frame body (wire.go has the framing):
//
//	count   uvarint, then count times:
//	flags   byte: bit 0 set for a response, bit 1 for a lease probe or echo; no other bit is
//	        defined
//	group   uvarint (not in a lease probe or echo)
//	term    uvarint (a lease probe's or echo's stamp)
//	commit  uvarint, for a heartbeat only
//
// Lease probes and echoes (flag bit 1) go only to a peer whose hello offers metaLease: an older
// node drops the connection on a flag it does not know.
// The sender and receiver are the connection's two nodes.

// appendHeartbeats appends one frame with beats.
func appendHeartbeats(buf []byte, beats []Heartbeat) []byte {
	buf, start := appendFrameHeader(buf, kindHeartbeats)
	buf = binary.AppendUvarint(buf, uint64(len(beats)))
	for _, b := range beats {
		var flags byte
		if b.Resp {
			flags |= 1
		}
		if b.Lease {
			buf = append(buf, flags|2)
			buf = binary.AppendUvarint(buf, b.Term)
			continue
		}
		buf = append(buf, flags)
		buf = binary.AppendUvarint(buf, b.Group)
		buf = binary.AppendUvarint(buf, b.Term)
		if !b.Resp {
			buf = binary.AppendUvarint(buf, b.Commit)
		}
	}
	return finishFrame(buf, start)
}

// decodeHeartbeats decodes a kindHeartbeats body.
func decodeHeartbeats(body []byte) ([]Heartbeat, error) {
	r := wireReader{b: body}
	// The shortest beat is a lease probe: flags and stamp of one byte each.
	n := r.count(2)
	beats := make([]Heartbeat, 0, n)
	for range n {
		if r.err != nil {
			break
		}
		if len(r.b) == 0 {
			r.err = fmt.Errorf("%w: heartbeat list cut short", ErrBadFrame)
			break
		}
		flags := r.b[0]
		r.b = r.b[1:]
		if flags > 3 {
			r.err = fmt.Errorf("%w: heartbeat flags %#x", ErrBadFrame, flags)
			break
		}
		if flags&2 != 0 {
			beats = append(beats, Heartbeat{Lease: true, Resp: flags&1 == 1, Term: r.uvarint()})
			continue
		}
		b := Heartbeat{Resp: flags == 1, Group: r.uvarint(), Term: r.uvarint()}
		if !b.Resp {
			b.Commit = r.uvarint()
		}
		beats = append(beats, b)
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%w: %d bytes after heartbeats", ErrBadFrame, len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	return beats, nil
}
