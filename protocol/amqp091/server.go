package amqp091

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/accept"
	"github.com/parleymq/parley/protocol/auth"
)

// Server accepts AMQP 0-9-1 connections and serves them against one broker.
type Server struct {
	cfg   Config
	b     *broker.Broker
	users *auth.Store
	log   *zap.Logger

	serverProps map[string]any

	mu      sync.Mutex
	reg     accept.Registry[*conn]
	blocked bool
	// alarm mirrors blocked for the readers' check after every publish (waitUnblocked), which
	// took mu, one mutex for every connection, per message.
	alarm     atomic.Bool
	reason    string
	unblocked chan struct{} // closed while not blocked; replaced when a block starts
}

// NewServer builds a server. log must not be nil.
func NewServer(cfg Config, b *broker.Broker, users *auth.Store, log *zap.Logger) *Server {
	cfg = cfg.withDefaults()
	if cfg.ClusterName == "" {
		host, _ := os.Hostname()
		cfg.ClusterName = "parley@" + host
	}
	s := &Server{
		cfg:       cfg,
		b:         b,
		users:     users,
		log:       log,
		unblocked: make(chan struct{}),
	}
	close(s.unblocked)
	s.serverProps = s.serverProperties()
	return s
}

// serverProperties are connection.start's server-properties, with the keys, types and
// capabilities RabbitMQ sends (rabbit_reader:server_properties/1).
func (s *Server) serverProperties() map[string]any {
	return map[string]any{
		"capabilities": map[string]any{
			"publisher_confirms":           true,
			"exchange_exchange_bindings":   true,
			"basic.nack":                   true,
			"consumer_cancel_notify":       true,
			"connection.blocked":           true,
			"consumer_priorities":          true,
			"authentication_failure_close": true,
			"per_consumer_qos":             true,
			"direct_reply_to":              true,
		},
		"cluster_name": s.cfg.ClusterName,
		"copyright":    "Copyright (c) The Parley authors",
		"information":  "Licensed under the Apache License 2.0",
		"platform":     "Go " + runtime.Version(),
		"product":      s.cfg.Product,
		"version":      s.cfg.Version,
	}
}

// Serve accepts connections on ln until ln is closed (or the server is), then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	return s.reg.Serve(ln, s.log, func(nc net.Conn) {
		c := newConn(s, nc)
		if !s.reg.Add(c) {
			_ = nc.Close()
			return
		}
		defer s.reg.Done(c)
		c.serve()
	})
}

// shutdownWait bounds how long Close waits for clients to answer connection.close.
const shutdownWait = 5 * time.Second

// Close stops accepting, sends connection.close 320 CONNECTION_FORCED to every client (as
// RabbitMQ does when it stops), waits a bounded time for their close-ok, then drops them.
func (s *Server) Close() {
	conns, first := s.reg.Close()
	if !first {
		return
	}
	// RabbitMQ: rabbit_networking:close_connections/2 with reason "shutdown".
	forced := newError(connectionForced, "broker forced connection closure with reason 'shutdown'")
	for _, c := range conns {
		c.forceClose(forced, shutdownWait)
	}
	if !s.reg.Wait(shutdownWait + time.Second) {
		s.log.Warn("connections still open after shutdown wait; abandoning them")
	}
}

// SetBlocked raises or clears a resource alarm. While blocked, connections stop reading as
// soon as they see a publish, and clients that advertise the connection.blocked capability
// get connection.blocked (reason) and later connection.unblocked, as RabbitMQ does.
func (s *Server) SetBlocked(reason string, blocked bool) {
	s.mu.Lock()
	if s.blocked == blocked {
		s.mu.Unlock()
		return
	}
	s.blocked, s.reason = blocked, reason
	s.alarm.Store(blocked)
	if blocked {
		s.unblocked = make(chan struct{})
	} else {
		close(s.unblocked)
	}
	s.mu.Unlock()
	for _, c := range s.reg.Conns() {
		c.notifyBlocked(reason, blocked)
	}
}

// blockState returns the current alarm and a channel closed when it clears.
func (s *Server) blockState() (bool, string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blocked, s.reason, s.unblocked
}

// String identifies the server in logs.
func (s *Server) String() string { return fmt.Sprintf("amqp091 server %s", s.cfg.Product) }
