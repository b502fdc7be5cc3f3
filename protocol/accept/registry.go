package accept

import (
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Registry tracks a server's listeners and live connections (of type C), so that closing the
// server stops every listener, reaches every connection and waits, bounded, for them to end.
// The zero value is ready to use.
type Registry[C comparable] struct {
	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[C]struct{}
	wg        sync.WaitGroup
}

// Serve runs Loop on ln, with serve for each connection, until ln or the registry is closed;
// then it returns nil.
func (r *Registry[C]) Serve(ln net.Listener, log *zap.Logger, serve func(net.Conn)) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	if r.listeners == nil {
		r.listeners = map[net.Listener]struct{}{}
	}
	r.listeners[ln] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.listeners, ln)
		r.mu.Unlock()
	}()
	return Loop(ln, log, r.Closed, serve)
}

// Add registers a connection about to be served; false means the registry is closed and the
// connection must not be served. Every true Add needs its Done.
func (r *Registry[C]) Add(c C) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	if r.conns == nil {
		r.conns = map[C]struct{}{}
	}
	r.conns[c] = struct{}{}
	r.wg.Add(1)
	return true
}

// Done unregisters a connection that has ended.
func (r *Registry[C]) Done(c C) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	r.wg.Done()
}

// Closed reports whether Close was called.
func (r *Registry[C]) Closed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Conns lists the live connections.
func (r *Registry[C]) Conns() []C {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]C, 0, len(r.conns))
	for c := range r.conns {
		out = append(out, c)
	}
	return out
}

// Close stops every listener and accepts no more connections. It returns the connections
// live at that moment, for the server to tell them it is going away, and false if the
// registry was already closed.
func (r *Registry[C]) Close() ([]C, bool) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, false
	}
	r.closed = true
	for ln := range r.listeners {
		_ = ln.Close()
	}
	r.mu.Unlock()
	return r.Conns(), true
}

// Wait waits until every registered connection is Done, or d has passed; it reports whether
// they all ended.
func (r *Registry[C]) Wait(d time.Duration) bool {
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
