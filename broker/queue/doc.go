// Package queue owns the queue state machine: enqueue, deliver, acknowledge, requeue,
// expire (TTL), length limits and dead-lettering decisions, consumer credit, consumer
// priorities, exclusive and single-active consumers. It matches RabbitMQ's classic queue
// behaviour as seen by AMQP 0-9-1 clients.
//
// The state machine is pure (DESIGN.md §2): no goroutines, locks, clocks, I/O or logging.
// Time arrives in each command as Unix milliseconds and effects (deliveries, dead letters)
// are appended to an Output the driver carries out, so the same commands give the same state
// on every replica of a durable queue.
//
// The hot path is publish, deliver, ack. Ready messages live in ring buffers (one per
// priority level); outstanding deliveries live in one ring ordered by delivery id, found by
// a check of the front then binary search, since acknowledgements mostly arrive in order.
// Neither costs an allocation per message once the rings have grown.
package queue
