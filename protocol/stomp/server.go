package stomp

import (
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/accept"
	"github.com/parleymq/parley/protocol/auth"
)

// Server accepts STOMP connections and serves them against one broker.
type Server struct {
	cfg   Config
	b     *broker.Broker
	users *auth.Store
	log   *zap.Logger

	mu  sync.Mutex
	reg accept.Registry[*conn]

	blocked   bool
	unblocked chan struct{} // closed while not blocked; replaced when a block starts
}

// NewServer builds a server. log must not be nil.
func NewServer(cfg Config, b *broker.Broker, users *auth.Store, log *zap.Logger) *Server {
	s := &Server{
		cfg:       cfg.withDefaults(),
		b:         b,
		users:     users,
		log:       log,
		unblocked: make(chan struct{}),
	}
	close(s.unblocked)
	return s
}

// SetBlocked raises or clears a resource alarm (disk space). While blocked, a connection that
// sends a SEND (or COMMITs one) stops being read before handling it, as RabbitMQ's STOMP
// reader does, so the publisher is held by TCP back-pressure and nothing is lost. STOMP has no
// frame to tell the client why.
func (s *Server) SetBlocked(reason string, blocked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.blocked == blocked {
		return
	}
	s.blocked = blocked
	if blocked {
		s.unblocked = make(chan struct{})
		s.log.Warn("STOMP publishers blocked", zap.String("reason", reason))
	} else {
		close(s.unblocked)
		s.log.Info("STOMP publishers unblocked")
	}
}

// unblockedChan returns a channel closed when no alarm is on.
func (s *Server) unblockedChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unblocked
}

// Serve accepts connections on ln until ln is closed (or the server is), then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	return s.reg.Serve(ln, s.log, func(nc net.Conn) { _ = s.ServeConn(nc, false) })
}

// ServeConn serves one STOMP connection on the calling goroutine until it ends, then closes
// nc. With framed, every frame (and heart-beat) is written by its own nc.Write call: over
// WebSocket each write is one message, and STOMP over WebSocket wants one frame per message.
func (s *Server) ServeConn(nc net.Conn, framed bool) error {
	c := newConn(s, nc, framed)
	if !s.reg.Add(c) {
		_ = nc.Close()
		return nil
	}
	defer s.reg.Done(c)
	c.serve()
	return nil
}

// shutdownWait bounds how long Close waits for connections to end.
const shutdownWait = 5 * time.Second

// Close stops accepting, sends every client an ERROR frame saying the broker is shutting
// down, and closes their connections.
func (s *Server) Close() {
	conns, first := s.reg.Close()
	if !first {
		return
	}
	for _, c := range conns {
		// RabbitMQ's STOMP reader on shutdown: amqp_death with CONNECTION_FORCED.
		c.fail(&stompError{msg: "connection_forced", detail: "broker forced connection closure with reason 'shutdown'"})
	}
	if !s.reg.Wait(shutdownWait) {
		s.log.Warn("STOMP connections still open after shutdown wait; abandoning them")
	}
}
