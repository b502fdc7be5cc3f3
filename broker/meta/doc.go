// Package meta owns the metadata state machine: the vhosts and, in each, the exchanges,
// queues and bindings, with the checks RabbitMQ makes on every declare, delete, bind and
// unbind, reported as *Error values carrying RabbitMQ's reply codes and reply texts.
//
// Each vhost keeps an *exchange.Router up to date; the broker publishes it as the routing
// snapshot after each change.
//
// What survives a restart is kept as keyed records (records.go): State notes the records each
// change touches, TakeChanges hands them out as puts and deletes for group 0's entries, and a
// RecordSet (group 0's state machine) applies them and rebuilds a State from them.
//
// The package is pure (DESIGN.md §2): no goroutines, no locks, no clock, no I/O. A State is not safe for concurrent use; the broker serialises changes.
package meta
