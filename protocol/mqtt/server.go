package mqtt

import (
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/accept"
	"github.com/parleymq/parley/protocol/auth"
)

// listenerID is the name mochi records as every client's listener; Parley accepts the
// connections itself and mochi's own listeners are never used.
const listenerID = "parley"

// Server serves MQTT connections against one broker.
type Server struct {
	cfg   Config
	b     *broker.Broker
	users *auth.Store
	log   *zap.Logger
	m     *mochi.Server
	hook  *bridge

	mu       sync.Mutex
	sessions map[*mochi.Client]*session
	byConn   map[net.Conn]*session
	// current is the live session of each client id: the one that records the session's
	// connection state (durable.go); a connection taken over is no longer current.
	current map[string]*session
	// shareMu orders joining and leaving shared subscription groups; shares counts each
	// group queue's members (joinShare).
	shareMu sync.Mutex
	shares  map[string]int
	// sentIDs: per client id of a persistent session without a connection, the packet
	// identifiers its last connection sent unacknowledged messages under (session.prevIDs).
	sentIDs map[string]map[uint64]uint16
	// wills are delayed wills (MQTT 5 will delay interval) waiting to be published; a new
	// connection with the same client id cancels its will [MQTT-3.1.3-9].
	wills map[string]*time.Timer
	// reg tracks the listeners and the connections being served.
	reg accept.Registry[net.Conn]
	// sweepDone ends sweepLoop (Close).
	sweepDone chan struct{}
}

// NewServer builds a server. log must not be nil.
func NewServer(cfg Config, b *broker.Broker, users *auth.Store, log *zap.Logger) *Server {
	cfg = cfg.withDefaults()
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketSize
	caps.ReceiveMaximum = cfg.ReceiveMaximum
	// mochi trims a client's receive maximum to this; Parley applies its own cap (MaxInflight).
	caps.MaximumInflight = math.MaxUint16
	// The core expires messages; mochi must not drop in-flight state on its own clock.
	caps.MaximumMessageExpiryInterval = 0
	// mochi's per-client outbound channel is never used (Parley writes deliveries itself), so
	// it costs nothing per connection.
	caps.MaximumClientWritesPending = 1
	// Acknowledgements must not echo the publish's properties back (mochi would, and with them
	// write its 0x01 "granted QoS 1" as a PUBACK reason code).
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	if cfg.MaxSessionExpiry > 0 {
		caps.MaximumSessionExpiryInterval = cfg.MaxSessionExpiry
	}
	opts := &mochi.Options{
		Capabilities: caps,
		Logger:       newSlog(log.Named("mochi")),
		// mochi reads from a guardConn, which hands it one whole packet at a time from its
		// own buffer (and holds none while the client is idle): a second buffer of its own
		// would only cost every connection its size. 16 bytes is bufio's minimum; a body
		// larger than that is read straight from the guardConn's packet.
		ClientNetReadBufferSize: 16,
		// Not a buffer mochi allocates up front: the size at which it flushes what it
		// coalesced while more packets were queued.
		ClientNetWriteBufferSize: 4096,
	}
	s := &Server{
		cfg:       cfg,
		b:         b,
		users:     users,
		log:       log,
		sessions:  map[*mochi.Client]*session{},
		byConn:    map[net.Conn]*session{},
		current:   map[string]*session{},
		shares:    map[string]int{},
		sentIDs:   map[string]map[uint64]uint16{},
		wills:     map[string]*time.Timer{},
		sweepDone: make(chan struct{}),
	}
	s.m = mochi.New(opts)
	// mochi's Serve and EstablishConnection are never called: Parley accepts and reads the
	// connections itself (conn.go); mochi's $SYS publisher and housekeeping loop (client
	// expiry, delayed wills, retained expiry) are things the core does.
	s.hook = &bridge{s: s}
	if err := s.m.AddHook(s.hook, nil); err != nil {
		panic(fmt.Sprintf("mqtt: adding the bridge hook: %v", err)) // only fails for a nil hook
	}
	s.recoverSessions()
	go s.sweepLoop(s.sweepDone)
	return s
}

// Serve accepts connections on ln until ln is closed (or the server is), then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	return s.reg.Serve(ln, s.log, func(nc net.Conn) { _ = s.ServeConn(nc) })
}

// ServeConn serves one MQTT connection that was accepted elsewhere (a TCP or TLS listener, or
// the WebSocket gateway for the "mqtt" subprotocol, which passes a net.Conn carrying the binary
// MQTT stream) until it ends, and closes it. The error says why the connection ended; a clean
// DISCONNECT gives nil.
func (s *Server) ServeConn(c net.Conn) error {
	if !s.reg.Add(c) {
		_ = c.Close()
		return net.ErrClosed
	}
	// This goroutine waits for the client's packets for as long as the connection lives, so
	// it keeps only small frames (see conn): the rest is in the functions below.
	mc := s.newConn(c)
	defer mc.ended()
	return mc.result(mc.serve())
}

//go:noinline
func (s *Server) newConn(c net.Conn) *conn {
	mc := &conn{s: s, g: newGuardConn(c, s.cfg.MaxPacketSize), done: make(chan struct{})}
	mc.g.tooLarge = mc.packetTooLarge
	return mc
}

// packetTooLarge: a packet over the maximum size once the session is up. MQTT 5 says why
// with DISCONNECT 0x95 before the close [MQTT-3.1.2-24]; MQTT 3.1.1 has no such packet and just
// closes. (An over-size CONNECT has no session yet and is closed without a word.)
func (c *conn) packetTooLarge() {
	s := c.s
	s.mu.Lock()
	sess := s.byConn[c.g]
	s.mu.Unlock()
	if sess != nil {
		s.disconnect(sess.cl, packets.ErrPacketTooLarge)
	}
}

//go:noinline
func (c *conn) result(err error) error {
	if err != nil {
		c.s.log.Debug("mqtt connection ended", zap.String("remote", c.g.RemoteAddr().String()), zap.Error(err))
		return fmt.Errorf("mqtt connection: %w", err)
	}
	return nil
}

// ended runs when ServeConn returns, also for a panic of its own goroutine.
func (c *conn) ended() {
	s := c.s
	defer s.reg.Done(c.g.Conn)
	// A bug reached by one client's bytes must cost that client its connection, not the
	// broker its process.
	if r := recover(); r != nil {
		s.log.Error("panic serving an mqtt connection; connection closed",
			zap.String("remote", c.g.RemoteAddr().String()), zap.Any("panic", r), zap.Stack("stack"))
		if c.cl != nil {
			c.cl.Stop(nil)
		}
		_ = c.g.Conn.Close()
	}
	// OnDisconnect runs only for a connection that got as far as reading packets after its
	// CONNACK; one that failed in between (CONNACK not written, a panic) still has its session
	// open.
	s.mu.Lock()
	sess := s.byConn[c.g]
	if sess != nil {
		delete(s.byConn, c.g)
		delete(s.sessions, sess.cl)
	}
	s.mu.Unlock()
	if sess != nil {
		sess.close(errors.New("connection ended before the session was established"))
		s.forgetClient(sess.cl, sess)
	}
}

// Close stops accepting, disconnects every client (MQTT 5 clients get DISCONNECT with reason
// 0x8B server shutting down) and waits, bounded, for their sessions to hand their unacknowledged
// deliveries back to the core. Wills are not published for a shutdown.
func (s *Server) Close() {
	if _, first := s.reg.Close(); !first {
		return
	}
	close(s.sweepDone)
	s.mu.Lock()
	for _, t := range s.wills {
		t.Stop()
	}
	s.mu.Unlock()
	for _, cl := range s.m.Clients.GetAll() {
		s.disconnect(cl, packets.ErrServerShuttingDown)
	}
	if !s.reg.Wait(10 * time.Second) {
		s.log.Warn("mqtt connections still closing after 10s")
	}
}

func (s *Server) session(cl *mochi.Client) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[cl]
}

// disconnect ends a client's connection for the server's reason: an MQTT 5 client is told why
// with DISCONNECT [MQTT-3.14.0-1], an MQTT 3.1.1 client is just closed, as that version has
// DISCONNECT only from client to server.
func (s *Server) disconnect(cl *mochi.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion == 5 {
		_ = s.m.DisconnectClient(cl, code)
		return
	}
	cl.Stop(code)
}
