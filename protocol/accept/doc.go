// Package accept owns the accept loop every listener of the protocol adapters shares: accept
// connections until the listener closes, hand each to its adapter on a goroutine of its own, and
// ride out transient accept errors (EMFILE, ENFILE, ECONNABORTED) with a bounded back-off
// instead of spinning or giving up.
package accept
