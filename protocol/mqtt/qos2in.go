package mqtt

// Exactly once for an inbound QoS 2 publish of a persistent session across a crash
// [MQTT-4.3.3-10] [MQTT-4.4.0-1].
//
// The session remembers each accepted identifier until PUBREL (the "in:<id>" record,
// durable.go), so the PUBLISH a client sends again after a reconnect or a restart (DUP, its
// PUBREC never came) is answered without being delivered again. The record and the message
// cannot be one write: the message goes into the log of every queue it is routed to. So the
// record goes first, saying where each durable destination queue's log stood and the token the
// message carries (header x-mqtt-qos2-token); then the message is published; then the record
// is marked done. A restart (recoverQoS2) finds each record still pending and looks for the
// token in those queues' logs after the marks (broker FindPublished): in none, the message was
// never stored and the record goes, so the client's resend is published as new; in some, the
// publish is completed in the others and the record is marked done, so the resend is a
// duplicate. A message is found in a log even after it was consumed, unless the log was
// compacted past the mark (a snapshot came between the record and the crash, and the message
// was consumed since, or never stored); such a queue, or one that cannot be read, counts as
// not having it, so the resend may store a second copy rather than none: at least once where
// exactly once cannot be told.
//
// A test-only fault hook, the environment variable PARLEYTEST_MQTT_QOS2_CRASH, makes the
// process kill itself (SIGKILL) at one of the points between those steps: "before-publish"
// (record written, message not published) or "after-publish" (message stored in every queue,
// record not marked done, no PUBREC). Integration tests use it to crash at the worst moments.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"os"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/message"
)

// hdrQoS2Token carries the token of an inbound QoS 2 publish of a persistent session.
const hdrQoS2Token = "x-mqtt-qos2-token"

// faultQoS2 is the test-only crash point (see above); "" in production.
var faultQoS2 = os.Getenv("PARLEYTEST_MQTT_QOS2_CRASH")

// crashAt kills the process at the named point when the fault hook asks for it.
func (x *session) crashAt(point string) {
	if faultQoS2 != point {
		return
	}
	x.s.log.Warn("test fault hook: killing the process", zap.String("point", point))
	_ = x.s.log.Sync()
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}

// inRecord is a pending "in:<id>" record: the token and the destination queues' log marks.
// Encoded as 1, the token (length byte and bytes), then uvarint count and each mark (uvarint
// name length, name, uvarint index). A done record is empty.
type inRecord struct {
	token string
	marks []broker.LogMark
}

func (r inRecord) encode() []byte {
	buf := append([]byte{1, byte(len(r.token))}, r.token...)
	buf = binary.AppendUvarint(buf, uint64(len(r.marks)))
	for _, m := range r.marks {
		buf = binary.AppendUvarint(buf, uint64(len(m.Queue)))
		buf = append(buf, m.Queue...)
		buf = binary.AppendUvarint(buf, m.Index)
	}
	return buf
}

func decodeInRecord(b []byte) (inRecord, bool) {
	if len(b) < 2 || b[0] != 1 || len(b) < 2+int(b[1]) {
		return inRecord{}, false
	}
	r := inRecord{token: string(b[2 : 2+int(b[1])])}
	b = b[2+int(b[1]):]
	n, used := binary.Uvarint(b)
	if used <= 0 || n > uint64(len(b)) {
		return inRecord{}, false
	}
	b = b[used:]
	for range n {
		l, used := binary.Uvarint(b)
		if used <= 0 || l > uint64(len(b)-used) {
			return inRecord{}, false
		}
		name := string(b[used : used+int(l)])
		b = b[used+int(l):]
		idx, used := binary.Uvarint(b)
		if used <= 0 {
			return inRecord{}, false
		}
		b = b[used:]
		r.marks = append(r.marks, broker.LogMark{Queue: name, Index: idx})
	}
	if len(b) != 0 {
		return inRecord{}, false
	}
	return r, true
}

// prepareQoS2 writes the pending record of an inbound QoS 2 publish of a persistent session,
// and tags m with its token, before m is published. false: the record could not be written
// (the publish is refused).
func (x *session) prepareQoS2(id uint16, m *message.Message) bool {
	var t [16]byte
	_, _ = rand.Read(t[:])
	token := hex.EncodeToString(t[:])
	m.Properties.Headers[hdrQoS2Token] = token
	r := inRecord{token: token, marks: x.v.LogMarks(m)}
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	if err := x.q.SetState(ctx, packetIDKey(stateInPrefix, id), r.encode()); err != nil {
		x.s.log.Warn("mqtt QoS 2 publish not recorded", zap.String("client_id", x.clientID), zap.Error(err))
		return false
	}
	x.crashAt("before-publish")
	return true
}

// recoverQoS2 settles the pending "in:" records of a session queue at start (see above).
func (s *Server) recoverQoS2(v *broker.VHost, q *broker.Queue, state map[string][]byte) {
	for k, val := range state {
		if !strings.HasPrefix(k, stateInPrefix) || len(val) == 0 {
			continue
		}
		r, ok := decodeInRecord(val)
		if !ok {
			continue
		}
		var found *message.Message
		var missing []string
		for _, mk := range r.marks {
			m, complete, err := v.FindPublished(mk, func(m *message.Message) bool {
				t, _ := m.Properties.Headers[hdrQoS2Token].(string)
				return t == r.token
			})
			switch {
			case m != nil:
				found = m
			case err != nil || !complete:
				s.log.Warn("mqtt QoS 2 recovery: not known whether a queue has the publish; taken for not stored",
					zap.String("queue", mk.Queue), zap.Error(err))
			default:
				missing = append(missing, mk.Queue)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
		var val []byte // nil: not stored, forget it
		if found != nil {
			for _, name := range missing {
				if err := v.PublishToQueue(ctx, name, found); err != nil {
					s.log.Warn("mqtt QoS 2 recovery: publish not completed", zap.String("queue", name), zap.Error(err))
				}
			}
			val = []byte{}
		}
		if err := q.SetState(ctx, k, val); err != nil {
			s.log.Warn("mqtt QoS 2 recovery: record not updated", zap.String("queue", q.Name()), zap.String("record", k), zap.Error(err))
		}
		cancel()
	}
}
