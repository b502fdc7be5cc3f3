// Package accept owns what every listener of the protocol adapters shares: the accept loop
// (accept connections until the listener closes, hand each to its adapter on a goroutine of its
// own, and ride out transient accept errors (EMFILE, ENFILE, ECONNABORTED) with a bounded
// back-off instead of spinning or giving up), and the Registry of a server's listeners and live
// connections that its Close stops, reaches and waits for.
package accept
