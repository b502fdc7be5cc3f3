// Package exchange owns routing: given the bindings of one vhost, which queues a message
// published to an exchange reaches. It implements RabbitMQ's four exchange types (direct,
// fanout, topic, headers), exchange-to-exchange bindings and alternate exchanges.
//
// A Router is an immutable snapshot. Every change (WithExchange, WithBinding, ...) returns a
// new Router that shares every part it did not touch, so the broker swaps snapshots atomically
// and the publish path reads them without locks. The package is pure: no goroutines, no
// locks, no clock, no I/O.
package exchange
