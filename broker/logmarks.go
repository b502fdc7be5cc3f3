package broker

// Finding a publish in the logs of the queues it went to, for an adapter that must publish a
// message exactly once across a crash (MQTT QoS 2 from a persistent session, DESIGN.md §3).
// A publish to several queues is one log entry in each queue's group, and no write makes the
// adapter's own record and those entries one: so the adapter records, before it publishes,
// where each durable queue's log stood (LogMarks) and a token the message carries; after a
// crash it looks for the token after those marks (FindPublished) and completes the publish in
// the queues that do not have it (PublishToQueue), or learns that none has it. A message once
// in a queue's log is found there even if it has been consumed since, as long as the log has
// not been compacted past the mark (FindPublished says when it was).

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/cluster"
)

// LogMark is where a durable queue's log stood: its name and the last index it had applied.
type LogMark struct {
	Queue string
	Index uint64
}

// LogMarks returns the marks of the durable queues m would be routed to now.
func (v *VHost) LogMarks(m *message.Message) []LogMark {
	r := v.router.Load()
	names := r.Route(m.Exchange, m.RoutingKey, m.Properties.Headers, nil)
	qm := *v.queues.Load()
	var out []LogMark
	for _, n := range names {
		if q, ok := qm[n]; ok && q.log != nil {
			out = append(out, LogMark{Queue: n, Index: q.group.Applied()})
		}
	}
	return out
}

// findScanBytes bounds what FindPublished reads of one queue's log.
const findScanBytes = 64 << 20

// FindPublished looks in the log of the queue mark names, after mark, for an enqueued message
// match accepts, and returns it. complete is false when the answer is not certain: the queue is
// gone, its log no longer holds every entry after the mark, or the scan read findScanBytes
// without reaching the end.
func (v *VHost) FindPublished(mark LogMark, match func(*message.Message) bool) (found *message.Message, complete bool, err error) {
	q, ok := v.queue(mark.Queue)
	if !ok || q.log == nil {
		return nil, false, nil
	}
	lo, read := mark.Index+1, uint64(0)
	for read < findScanBytes {
		next, err := q.log.reader.Read(lo, math.MaxUint64, 1<<20, func(_ uint64, data []byte) {
			read += uint64(len(data))
			if found != nil || !isEnqueue(data) {
				return
			}
			_ = decodeEnqueued(data, func(_ int, _ int64, m *message.Message) bool {
				if match(m) {
					found = m
					m.Body = append([]byte(nil), m.Body...) // data is the reader's
					return false
				}
				return true
			})
		})
		if errors.Is(err, cluster.ErrCompacted) {
			return found, found != nil, nil
		}
		if err != nil {
			return found, false, fmt.Errorf("queue %q: find a publish: %w", mark.Queue, err)
		}
		if found != nil {
			return found, true, nil
		}
		if next <= lo {
			return nil, true, nil // the end of the log
		}
		lo = next
	}
	return nil, false, nil
}

// PublishToQueue publishes m to the named queue only, as if routed there, and returns once the
// queue has accepted it (for a durable queue and a persistent message: committed).
func (v *VHost) PublishToQueue(ctx context.Context, name string, m *message.Message) error {
	q, ok := v.queue(name)
	if !ok {
		return v.notFoundQueue(name)
	}
	res := make(chan bool, 1)
	t := &confirmTracker{fn: func(ok bool) { res <- ok }}
	t.pending.Store(1)
	q.publish(m, t, nil)
	select {
	case ok := <-res:
		if !ok {
			return fmt.Errorf("queue %q refused the message", name)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("queue %q: %w", name, ctx.Err())
	}
}
