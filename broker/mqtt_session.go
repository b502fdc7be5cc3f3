package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/queue"
)

// What the MQTT adapter needs from the core beyond what AMQP uses. An MQTT session is a queue
// (DESIGN.md §3) whose bindings are its subscriptions; the adapter keeps each subscription's
// options in the binding's arguments, so a durable session's subscriptions come back with the
// metadata after a restart without a record format of their own.

// QueueBindings returns the bindings whose destination is the named queue, from the current
// routing snapshot.
func (v *VHost) QueueBindings(queue string) []exchange.Binding {
	return v.router.Load().BindingsTo(exchange.Dest{Name: queue})
}

// DeleteQueueIf deletes q if it is still the queue of its name, and reports whether it did. A
// session that was taken over must not delete the queue its successor declared under the same
// name.
func (v *VHost) DeleteQueueIf(q *Queue) bool {
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	if cur, ok := v.queue(q.def.Name); ok && cur == q {
		_, err := v.deleteQueueLocked(q)
		return err == nil
	}
	return false
}

// LookupQueue returns the running queue of that name, without the exclusivity check of Queue.
func (v *VHost) LookupQueue(name string) (*Queue, bool) { return v.queue(name) }

// Queue state records. A protocol session that is a queue (an MQTT session, DESIGN.md §3) has a
// little state of its own that must live and die with the queue: for MQTT, the will of the live
// connection, QoS 2 packet identifiers between PUBREC and PUBREL, shared subscriptions. A
// durable queue keeps these records in its log, next to its messages (one entry per change,
// group-committed and replicated like an enqueue; its snapshot carries them), so they survive a
// restart and a kill -9 and go when the queue is deleted. A transient queue keeps them in
// memory, so the adapter has one code path.

// errRemoteState: state records are not forwarded to a remote queue; the queues that have them
// (MQTT sessions) are never spread (spreadable).
var errRemoteState = errors.New("queue state records are not kept by a queue hosted on another node")

// SetState sets the state record key to val, or deletes it when val is nil, and returns once
// the change is committed (for a durable queue: written, fsynced and replicated).
func (q *Queue) SetState(ctx context.Context, key string, val []byte) error {
	if q.remote != nil {
		return errRemoteState
	}
	if strings.HasPrefix(key, "\x00") {
		return fmt.Errorf("queue %q state %q: keys starting with a zero byte are the queue's own", q.def.Name, key)
	}
	if q.log == nil {
		q.stateMu.Lock()
		if val == nil {
			delete(q.memState, key)
		} else {
			if q.memState == nil {
				q.memState = map[string][]byte{}
			}
			q.memState[key] = bytes.Clone(val)
		}
		q.stateMu.Unlock()
		return nil
	}
	f, err := q.group.Propose(ctx, q.log.tagged(stateEntry(key, val)))
	if err != nil {
		return fmt.Errorf("queue %q state %q: %w", q.def.Name, key, err)
	}
	res, err := f.Wait(ctx)
	if err == nil {
		err, _ = res.(error)
	}
	if err != nil {
		return fmt.Errorf("queue %q state %q: %w", q.def.Name, key, err)
	}
	return nil
}

// SetStateAsync is SetState without waiting: the change is proposed now, after every change
// proposed before it (so changes of one key apply in the order made), and logged when done
// fails.
func (q *Queue) SetStateAsync(key string, val []byte) {
	if q.log == nil || q.remote != nil {
		_ = q.SetState(context.Background(), key, val)
		return
	}
	err := q.group.ProposeAsync(q.log.tagged(stateEntry(key, val)), func(res any, err error) {
		if err == nil {
			err, _ = res.(error)
		}
		if err != nil {
			q.v.b.log.Warn("queue state record not stored", zap.String("queue", q.def.Name), zap.String("key", key), zap.Error(err))
		}
	})
	if err != nil {
		q.v.b.log.Warn("queue state record not proposed", zap.String("queue", q.def.Name), zap.String("key", key), zap.Error(err))
	}
}

// SettleWithState settles deliveries and writes a state record after the settlement, and
// returns once both are committed: the record's log entry follows the settlement's, so once
// the record is there the settlement is too. (MQTT QoS 2: the delivery a PUBREC answered is
// settled for good before PUBREL goes out, so a crash cannot bring it back.)
func (q *Queue) SettleWithState(ctx context.Context, ids []queue.DeliveryID, o queue.Outcome, key string, val []byte) error {
	if q.log == nil || q.remote != nil {
		q.Settle(ids, o)
		return q.SetState(ctx, key, val)
	}
	c := command{kind: cmdSettle, ids: ids, outcome: o, state: &stateChange{key: key, val: val}, reply: make(chan result, 1)}
	if !q.send(c) {
		return fmt.Errorf("queue %q: deleted", q.def.Name)
	}
	select {
	case r := <-c.reply:
		return r.err
	case <-q.done:
		return fmt.Errorf("queue %q: deleted", q.def.Name)
	case <-ctx.Done():
		return fmt.Errorf("queue %q state %q: %w", q.def.Name, key, ctx.Err())
	}
}

// settledWithState proposes the removals of a settlement now, then its state record, on the
// queue's goroutine (so in that order in the log), and answers c once the record commits.
func (q *Queue) settledWithState(c command) {
	q.logRemoved()
	err := q.group.ProposeAsync(q.log.tagged(stateEntry(c.state.key, c.state.val)), func(res any, err error) {
		if err == nil {
			err, _ = res.(error)
		}
		c.reply <- result{err: err}
	})
	if err != nil {
		c.reply <- result{err: err}
	}
}

// RefState is a state record tied to one message of a durable queue, by its reference
// (queue.Delivery.Ref): it lives no longer than the message. (MQTT: the packet identifier a
// delivery of a persistent session went out under, so that after a restart it goes out again
// under the same one [MQTT-4.4.0-1].)
type RefState struct {
	Ref uint64
	Val []byte // empty deletes the record
}

// SetRefStates sets per-message records, all in one log entry, and returns once it is
// committed. A record whose message has left the queue by then is dropped, and the entry that
// removes a message (its ack, expiry, ...) removes its record, so records never outlive their
// messages and need no deleting. A transient queue has no references and keeps none.
func (q *Queue) SetRefStates(ctx context.Context, recs []RefState) error {
	if q.log == nil || len(recs) == 0 {
		return nil
	}
	f, err := q.group.Propose(ctx, q.log.tagged(stateEntry(refStatesKey, encodeRefStates(recs))))
	if err != nil {
		return fmt.Errorf("queue %q message records: %w", q.def.Name, err)
	}
	res, err := f.Wait(ctx)
	if err == nil {
		err, _ = res.(error)
	}
	if err != nil {
		return fmt.Errorf("queue %q message records: %w", q.def.Name, err)
	}
	return nil
}

// SetRefStatesAsync is SetRefStates without waiting: proposed now (so before anything
// proposed after it, an ack's removal included), and logged when it fails.
func (q *Queue) SetRefStatesAsync(recs []RefState) {
	if q.log == nil || len(recs) == 0 {
		return
	}
	err := q.group.ProposeAsync(q.log.tagged(stateEntry(refStatesKey, encodeRefStates(recs))), func(res any, err error) {
		if err == nil {
			err, _ = res.(error)
		}
		if err != nil {
			q.v.b.log.Warn("queue message records not stored", zap.String("queue", q.def.Name), zap.Error(err))
		}
	})
	if err != nil {
		q.v.b.log.Warn("queue message records not proposed", zap.String("queue", q.def.Name), zap.Error(err))
	}
}

// RefStates returns a copy of the queue's per-message records, by message reference.
func (q *Queue) RefStates() map[uint64][]byte {
	if q.log == nil {
		return nil
	}
	return q.log.refStatesCopy()
}

// State returns a copy of the queue's state records.
func (q *Queue) State() map[string][]byte {
	if q.log != nil {
		return q.log.stateCopy()
	}
	q.stateMu.Lock()
	defer q.stateMu.Unlock()
	out := make(map[string][]byte, len(q.memState))
	for k, v := range q.memState {
		out[k] = v
	}
	return out
}

// SetIdleSince tells the queue when it was last used, Unix ms, for x-expires: a session the
// adapter knows was left at that time (before a restart, which otherwise counts as a use)
// expires that long after it, not after the restart.
func (q *Queue) SetIdleSince(ms int64) {
	if ms < q.lastUsed.Load() {
		q.lastUsed.Store(ms)
		q.Kick()
	}
}

// SetExpires changes how long the queue may go unused before it is deleted, in ms (0: never),
// in place of its x-expires argument, until the queue stops. (An MQTT client that connects
// again, or disconnects, with another session expiry changes its session's [MQTT-3.1.2-23];
// the declared argument stays what the metadata says, so the adapter keeps the new value with
// the session and sets it again after a restart.)
func (q *Queue) SetExpires(ms int64) {
	if q.expires.Swap(max(ms, 0)) != ms {
		q.Kick()
	}
}

// QueuesWithPrefix returns the running queues whose name starts with prefix (an adapter finds
// its sessions' queues after a restart this way).
func (v *VHost) QueuesWithPrefix(prefix string) []*Queue {
	var out []*Queue
	for name, q := range v.queueMap() {
		if strings.HasPrefix(name, prefix) {
			out = append(out, q)
		}
	}
	return out
}
