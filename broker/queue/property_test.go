package queue

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/parleymq/parley/broker/message"
)

// TestRandomCommands drives queues with random command sequences and checks, after every
// command, that the queue agrees with a simple model: every published message is in exactly
// one place (ready, outstanding, or gone by ack, dead letter, drop, purge or refusal), an
// outstanding message is never handed out again, consumers never exceed their prefetch,
// redelivered is set exactly for messages delivered before, delivery ids increase, and
// nothing ready is ahead of a message just delivered.
func TestRandomCommands(t *testing.T) {
	for seed := uint64(0); seed < 300; seed++ {
		propertyRun(t, seed, 400)
	}
}

type mstate uint8

const (
	mReady mstate = iota
	mOut
	mGone
)

type mmsg struct {
	m         *message.Message
	seq       int
	prio      uint8
	state     mstate
	delivered bool
	id        DeliveryID
	consumer  ConsumerID // 0 for basic.get
	expiry    int64      // -1: none
}

type mconsumer struct {
	spec    ConsumerSpec
	unacked int
}

func propertyRun(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	removed := map[uint64]int{} // reference -> times reported in Output.Removed
	cfg := cfgDefault()
	cfg.HasDeadLetterExchange = rng.IntN(4) != 0
	if rng.IntN(2) == 0 {
		cfg.MessageTTL = int64(rng.IntN(3) * 50) // 0, 50 or 100
	}
	if rng.IntN(3) == 0 {
		cfg.MaxLength = int64(rng.IntN(6))
	}
	if rng.IntN(4) == 0 {
		cfg.MaxLengthBytes = int64(rng.IntN(20))
	}
	cfg.Overflow = Overflow(rng.IntN(3))
	if rng.IntN(2) == 0 {
		cfg.MaxPriority = uint8(rng.IntN(4))
	}
	cfg.SingleActiveConsumer = rng.IntN(5) == 0
	q := New(cfg)

	var (
		out       Output
		now       int64 = 1000
		msgs      []*mmsg
		byMsg     = map[*message.Message]*mmsg{}
		consumers = map[ConsumerID]*mconsumer{}
		nextC     ConsumerID
		lastID    DeliveryID
		published *message.Message // in this step
	)
	fail := func(step int, format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d step %d (cfg %+v): "+format, append([]any{seed, step, cfg}, args...)...)
	}
	outstanding := func() []*mmsg {
		var r []*mmsg
		for _, m := range msgs {
			if m.state == mOut {
				r = append(r, m)
			}
		}
		return r
	}
	deliver := func(step int, d Delivery, noAck bool) {
		mm := byMsg[d.Msg]
		if mm == nil || mm.state != mReady {
			fail(step, "delivered a message that is not ready: %+v", mm)
		}
		if d.ID <= lastID {
			fail(step, "delivery id %d after %d", d.ID, lastID)
		}
		lastID = d.ID
		if mm.expiry >= 0 && (now > mm.expiry || (now == mm.expiry && (mm.m != published || mm.delivered))) {
			fail(step, "delivered %s at %d, expired at %d", mm.m.Properties.MessageID, now, mm.expiry)
		}
		if d.Redelivered != mm.delivered {
			fail(step, "redelivered=%v, delivered before=%v", d.Redelivered, mm.delivered)
		}
		if d.Consumer != 0 {
			c := consumers[d.Consumer]
			if c == nil {
				fail(step, "delivery to unknown consumer %d", d.Consumer)
			}
			noAck = c.spec.NoAck
			if !noAck {
				c.unacked++
				if c.spec.Prefetch > 0 && c.unacked > int(c.spec.Prefetch) {
					fail(step, "consumer %d over prefetch %d", d.Consumer, c.spec.Prefetch)
				}
			}
		}
		if noAck {
			mm.state = mGone
		} else {
			mm.state, mm.id, mm.consumer, mm.delivered = mOut, d.ID, d.Consumer, true
		}
	}
	for step := 0; step < steps; step++ {
		var delivered []*mmsg
		var settledDiscard map[*message.Message]bool
		var refused *message.Message
		published = nil
		switch op := rng.IntN(100); {
		case op < 35: // publish
			body := make([]byte, rng.IntN(6))
			m := &message.Message{Body: body, Properties: message.Properties{MessageID: strconv.Itoa(len(msgs))}}
			if rng.IntN(2) == 0 {
				m.Properties.Flags |= message.FlagPriority
				m.Properties.Priority = uint8(rng.IntN(6))
			}
			if rng.IntN(4) == 0 {
				m.Properties.Flags |= message.FlagExpiration
				m.Properties.Expiration = strconv.Itoa(rng.IntN(3) * 40)
			}
			mm := &mmsg{m: m, seq: len(msgs), expiry: -1}
			ttl := cfg.MessageTTL
			if m.Properties.Flags&message.FlagExpiration != 0 {
				if v, _ := strconv.ParseInt(m.Properties.Expiration, 10, 64); ttl < 0 || v < ttl {
					ttl = v
				}
			}
			if ttl >= 0 {
				mm.expiry = now + ttl
			}
			if cfg.MaxPriority > 0 && m.Properties.Flags&message.FlagPriority != 0 {
				mm.prio = min(m.Properties.Priority, cfg.MaxPriority)
			}
			msgs = append(msgs, mm)
			byMsg[m] = mm
			published = m
			if !q.PublishRef(now, m, uint64(mm.seq)+1, &out) {
				mm.state = mGone
				refused = m
			}
		case op < 42: // consume
			nextC++
			spec := ConsumerSpec{ID: nextC, Prefetch: uint32(rng.IntN(4)), NoAck: rng.IntN(5) == 0, Exclusive: rng.IntN(10) == 0, Priority: int32(rng.IntN(3))}
			err := q.AddConsumer(spec)
			anyExcl := false
			for _, c := range consumers {
				anyExcl = anyExcl || c.spec.Exclusive
			}
			wantErr := len(consumers) > 0 && (spec.Exclusive || anyExcl)
			if (err != nil) != wantErr || (err != nil && !errors.Is(err, ErrExclusiveConsumer)) {
				fail(step, "AddConsumer err = %v, want error %v", err, wantErr)
			}
			if err == nil {
				consumers[nextC] = &mconsumer{spec: spec}
			}
		case op < 47: // cancel
			for id := range consumers {
				q.RemoveConsumer(id)
				delete(consumers, id)
				break
			}
		case op < 65: // drain
			deny := map[ConsumerID]bool{}
			for id := range consumers {
				if rng.IntN(4) == 0 {
					deny[id] = true
				}
			}
			q.Drain(now, func(id ConsumerID) bool { return !deny[id] }, &out)
		case op < 85: // settle
			os := outstanding()
			if len(os) == 0 {
				continue
			}
			rng.Shuffle(len(os), func(i, j int) { os[i], os[j] = os[j], os[i] })
			os = os[:1+rng.IntN(len(os))]
			ids := make([]DeliveryID, len(os))
			for i, m := range os {
				ids[i] = m.id
			}
			o := Outcome(rng.IntN(3))
			if rng.IntN(10) == 0 {
				ids = append(ids, lastID+1) // unknown: nothing may change
				ready, unacked := q.Len(), q.Unacked()
				if err := q.Settle(now, ids, o, &out); !errors.Is(err, ErrUnknownDelivery) {
					fail(step, "Settle with an unknown id: %v", err)
				}
				if q.Len() != ready || q.Unacked() != unacked || len(out.Deliveries)+len(out.DeadLetters) != 0 {
					fail(step, "a failed Settle changed the queue")
				}
				continue
			}
			if err := q.Settle(now, ids, o, &out); err != nil {
				fail(step, "Settle: %v", err)
			}
			settledDiscard = map[*message.Message]bool{}
			for _, m := range os {
				if m.consumer != 0 {
					if c := consumers[m.consumer]; c != nil {
						c.unacked--
					}
				}
				switch o {
				case Requeue:
					m.state = mReady
				default:
					m.state = mGone
					if o == Discard {
						settledDiscard[m.m] = true
					}
				}
			}
		case op < 92: // get
			getNoAck := rng.IntN(2) == 0
			d, ok := q.Get(now, getNoAck, &out)
			if ok {
				deliver(step, d, getNoAck)
				delivered = append(delivered, byMsg[d.Msg])
			}
		case op < 94: // purge
			n := q.Purge(&out)
			want := 0
			for _, m := range msgs {
				if m.state == mReady {
					want++
					m.state = mGone
				}
			}
			if n != want {
				fail(step, "Purge = %d, want %d", n, want)
			}
		default: // time passes
			now += int64(rng.IntN(60))
		}
		for _, d := range out.Deliveries {
			deliver(step, d, false)
			delivered = append(delivered, byMsg[d.Msg])
		}
		for _, dl := range out.DeadLetters {
			if !cfg.HasDeadLetterExchange {
				fail(step, "dead letter without a dead-letter exchange")
			}
			mm := byMsg[dl.Msg]
			switch {
			case dl.Reason == Rejected && settledDiscard[dl.Msg]:
				delete(settledDiscard, dl.Msg)
			case dl.Reason == MaxLen && dl.Msg == refused && cfg.Overflow == RejectPublishDLX:
				refused = nil
			case mm.state == mReady && ((dl.Reason == Expired && mm.expiry >= 0 && now >= mm.expiry) || (dl.Reason == MaxLen && cfg.Overflow == DropHead)):
				mm.state = mGone
			default:
				fail(step, "unexpected dead letter %s of %+v", dl.Reason, mm)
			}
		}
		if cfg.HasDeadLetterExchange && len(settledDiscard) > 0 {
			fail(step, "discarded messages not dead-lettered")
		}
		for _, ref := range out.Removed {
			removed[ref]++
		}
		out.Reset()
		// Drops without a dead-letter exchange are invisible: reconcile through the counts.
		ready, bytes, unacked := 0, int64(0), 0
		for _, m := range msgs {
			switch m.state {
			case mReady:
				ready++
				bytes += int64(m.m.Size())
			case mOut:
				unacked++
			}
		}
		if !cfg.HasDeadLetterExchange && q.Len() < ready {
			// Work out which ones went: the queue's own rings say what is left.
			left := map[*message.Message]bool{}
			for l := range q.levels {
				r := &q.levels[l]
				for i := 0; i < r.len(); i++ {
					left[r.at(i).msg] = true
				}
			}
			for _, m := range msgs {
				if m.state == mReady && !left[m.m] {
					m.state = mGone
					ready--
					bytes -= int64(m.m.Size())
				}
			}
		}
		if q.Len() != ready || q.Bytes() != bytes || q.Unacked() != unacked {
			fail(step, "queue says ready=%d bytes=%d unacked=%d, model %d %d %d", q.Len(), q.Bytes(), q.Unacked(), ready, bytes, unacked)
		}
		// Every message that left for good is reported removed exactly once, and no other.
		for _, m := range msgs {
			n := removed[uint64(m.seq)+1]
			if (m.state == mGone && n != 1) || (m.state != mGone && n != 0) {
				fail(step, "message %s in state %d reported removed %d times", m.m.Properties.MessageID, m.state, n)
			}
		}
		if q.ConsumerCount() != len(consumers) {
			fail(step, "consumer count %d, want %d", q.ConsumerCount(), len(consumers))
		}
		for _, d := range delivered {
			for _, m := range msgs {
				// Publish may deliver before enqueueing the new message (reject-publish).
				if m.m != published && m.state == mReady && (m.prio > d.prio || (m.prio == d.prio && m.seq < d.seq)) {
					fail(step, "delivered %s while %s was ready ahead of it", d.m.Properties.MessageID, m.m.Properties.MessageID)
				}
			}
		}
		if cfg.MaxLength >= 0 && cfg.Overflow == DropHead && int64(q.Len()) > cfg.MaxLength {
			fail(step, "length %d over max %d", q.Len(), cfg.MaxLength)
		}
	}
}
