package broker

import "github.com/parleymq/parley/broker/exchange"

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
