package cluster

// TCPTransport: the networked Transport (DESIGN.md §5).
//
// One TCP connection per pair of nodes carries every group's raft messages in both directions
// (frames of wire.go). The node with the lower id dials; the other accepts, so the two never
// race to open two connections. Each peer has a bounded queue of outgoing batches and one
// writer goroutine that coalesces whatever is queued into one buffered write and flushes when
// the queue is empty. Send never blocks the host's loop: when a peer's queue is full, or the
// peer is unreachable, the batch is dropped and the host is told (ReportUnreachable, and
// ReportSnapshot failure for a snapshot), because raft tolerates lost messages and retransmits;
// a stalled peer must not stall every other group of the node.
//
// Each side pings a connection it has written nothing on for PingInterval and gives the
// connection up when it has read nothing for PeerTimeout, so a silent peer is noticed even when
// no group has anything to send; the host hears PeerUp and PeerDown (liveness per node, which
// quiesced groups rely on, see quiesce.go).
//
// A lost connection is re-dialled with a capped exponential backoff. The first frame each way is
// a hello naming the node and what it advertises (its client listener addresses, which
// cmd/parley uses to send clients to the node that serves them, and its cluster address).
//
// Peers change at run time (membership.go): the host adds a member it records (AddPeer) and
// removes one it forgets (RemovePeer). A connection from a node the transport does not know yet
// is accepted when its hello gives its cluster address: that is how a joining node, which knows
// only the members its configuration lists, meets the others (the lower id dials, so members
// with lower ids dial the new node as soon as they record it). Every hello also carries the
// sender's membership record, and a transport adds the members it did not know: a node that
// missed a join (or installed the metadata group by snapshot) finds the new members from the
// first member it reaches, and a joining node finds the members its configuration omits. A
// removed node is told so: the
// transport writes one more hello carrying metaRemoved on the connection it closes, and answers
// the removed node's later connections the same way, so that node stops (Host.NotifyRemoved)
// instead of campaigning alone for ever.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// TCPConfig configures a TCPTransport.
type TCPConfig struct {
	// NodeID is this node's raft id.
	NodeID uint64
	// Listener accepts the peers' connections. If nil, Listen is listened on.
	Listener net.Listener
	// Listen is the cluster address to listen on (host:port) when Listener is nil.
	Listen string
	// Peers maps every node id to its cluster address; this node's own entry is ignored.
	Peers map[uint64]string
	// Meta is what this node advertises to its peers in its hello (e.g. "amqp" -> address).
	Meta map[string]string
	// QueueLen bounds the batches queued for one peer; more are dropped. Default 4096.
	QueueLen int
	// MaxFrame bounds a frame read from a peer. Default DefaultMaxFrame.
	MaxFrame int
	// DialTimeout bounds one dial and one hello exchange. Default 2s.
	DialTimeout time.Duration
	// MaxBackoff caps the wait between two dials of an unreachable peer. Default 1s.
	MaxBackoff time.Duration
	// PingInterval is how long a connection may go without a write before a ping is sent on
	// it. Default 200ms.
	PingInterval time.Duration
	// PeerTimeout is how long a connection may go without reading anything (pings included)
	// before the peer is considered lost and the connection closed. It should be a few ping
	// intervals, and below the hosts' election timeout. Default 1s.
	PeerTimeout time.Duration
	// Advertise is this node's cluster address as its peers dial it, sent in its hello so a
	// node that did not know it can add it. Default: none.
	Advertise string
}

// Hello meta keys the transport itself sets.
const (
	metaCluster = "cluster" // the sender's cluster address
	metaRemoved = "removed" // "you are no longer a member" (its value: the sender's id)
	metaMembers = "members" // the sender's membership record, "id=addr,id=addr"
)

// TCPTransport carries raft messages over TCP. Create it with NewTCPTransport, give it to the
// host's Config, then Start it with that host.
type TCPTransport struct {
	cfg  TCPConfig
	log  *zap.Logger
	ln   net.Listener
	host atomic.Pointer[Host]
	// peers is replaced, never changed in place (copy on write under mu), so Send reads it
	// without a lock.
	peers   atomic.Pointer[map[uint64]*peer]
	started bool
	removed map[uint64]bool // forgotten peers, told so when they connect
	// toldRemoved: a peer said this node is no longer a member.
	toldRemoved atomic.Bool
	// rpc receives the RPC channel's messages (tcprpc.go); set before Start.
	rpc RPCHandler
	// noBeatOffer leaves metaBeats out of the hello, as a node that predates coalesced
	// heartbeats does (tests); set before Start.
	noBeatOffer bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// PeerStatus is what the transport knows of one peer.
type PeerStatus struct {
	ID        uint64
	Addr      string
	Connected bool
	// Meta is what the peer advertised in its last hello.
	Meta map[string]string
	// Dropped counts messages to the peer dropped (queue full or peer unreachable).
	Dropped uint64
	// Sent counts raft messages written to the peer (a coalesced heartbeat counts as the
	// message it stands for); Frames counts the frames that carried them.
	Sent, Frames uint64
}

type outBatch struct {
	group uint64
	msgs  []*raftpb.Message
	// An RPC channel message instead of raft messages (tcprpc.go); onDrop, if set, is called
	// when it is known not to have been written.
	rpc    []byte
	onDrop func()
	// beats, when set, is a coalesced heartbeat list instead (heartbeat.go; group and msgs unset).
	beats []Heartbeat
}

type peer struct {
	id     uint64
	t      *TCPTransport
	ctx    context.Context // ends when the transport closes or the peer is removed
	cancel context.CancelFunc
	// gone is set when the peer was removed: its last connection says so before closing.
	gone atomic.Bool
	out  chan outBatch
	// accepted hands the writer a connection the listener accepted from this peer.
	accepted chan *bufConn
	// next is a connection accepted while the writer still served an older one.
	next *bufConn

	mu        sync.Mutex
	addr      string
	meta      map[string]string
	connected atomic.Bool
	dropped   atomic.Uint64
	sent      atomic.Uint64
	frames    atomic.Uint64
}

// NewTCPTransport listens on the cluster address; it sends nothing until Start.
func NewTCPTransport(cfg TCPConfig, log *zap.Logger) (*TCPTransport, error) {
	if cfg.NodeID == 0 {
		return nil, fmt.Errorf("%w: transport NodeID must not be 0", ErrInvalidConfig)
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 4096
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = DefaultMaxFrame
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Second
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 200 * time.Millisecond
	}
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = time.Second
	}
	if cfg.PeerTimeout <= cfg.PingInterval {
		return nil, fmt.Errorf("%w: PeerTimeout (%v) must exceed PingInterval (%v)",
			ErrInvalidConfig, cfg.PeerTimeout, cfg.PingInterval)
	}
	if log == nil {
		log = zap.NewNop()
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("cluster listen %s: %w", cfg.Listen, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &TCPTransport{
		cfg:     cfg,
		log:     log.With(zap.Uint64("node", cfg.NodeID)),
		ln:      ln,
		ctx:     ctx,
		cancel:  cancel,
		conns:   make(map[net.Conn]struct{}),
		removed: make(map[uint64]bool),
	}
	peers := make(map[uint64]*peer)
	for id, addr := range cfg.Peers {
		if id == cfg.NodeID {
			continue
		}
		if id == 0 {
			cancel()
			_ = ln.Close()
			return nil, fmt.Errorf("%w: peer id 0", ErrInvalidConfig)
		}
		peers[id] = t.newPeer(id, addr)
	}
	t.peers.Store(&peers)
	return t, nil
}

func (t *TCPTransport) newPeer(id uint64, addr string) *peer {
	ctx, cancel := context.WithCancel(t.ctx)
	return &peer{
		id: id, addr: addr, t: t, ctx: ctx, cancel: cancel,
		out:      make(chan outBatch, t.cfg.QueueLen),
		accepted: make(chan *bufConn, 1),
	}
}

// AddPeer makes node id, at cluster address addr, a peer (or updates its address); a node
// removed earlier may come back this way.
func (t *TCPTransport) AddPeer(id uint64, addr string) {
	if id == t.cfg.NodeID || id == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	delete(t.removed, id)
	old := *t.peers.Load()
	if p := old[id]; p != nil {
		if addr != "" {
			p.mu.Lock()
			p.addr = addr
			p.mu.Unlock()
		}
		return
	}
	peers := maps.Clone(old)
	p := t.newPeer(id, addr)
	peers[id] = p
	t.peers.Store(&peers)
	if t.started {
		t.wg.Add(1)
		go p.run()
	}
	t.log.Info("cluster peer added", zap.Uint64("peer", id), zap.String("addr", addr))
}

// RemovePeer forgets node id: its connection is closed after telling it it is no longer a
// member, and so is every later connection from it.
func (t *TCPTransport) RemovePeer(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || id == t.cfg.NodeID {
		return
	}
	t.removed[id] = true
	old := *t.peers.Load()
	p := old[id]
	if p == nil {
		return
	}
	peers := maps.Clone(old)
	delete(peers, id)
	t.peers.Store(&peers)
	p.gone.Store(true)
	p.cancel()
	t.log.Info("cluster peer removed", zap.Uint64("peer", id))
}

// PeerAddr is the cluster address the transport has for node id ("" if none).
func (t *TCPTransport) PeerAddr(id uint64) string {
	if p := (*t.peers.Load())[id]; p != nil {
		return p.getAddr()
	}
	return ""
}

func (t *TCPTransport) isRemoved(id uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.removed[id]
}

// goodbye is the hello that tells a removed node so.
func (t *TCPTransport) goodbye() []byte {
	return appendHello(nil, hello{node: t.cfg.NodeID, meta: map[string]string{metaRemoved: fmt.Sprint(t.cfg.NodeID)}})
}

// Addr is the address the transport listens on.
func (t *TCPTransport) Addr() net.Addr { return t.ln.Addr() }

// Start delivers received messages to h and starts connecting to the peers.
func (t *TCPTransport) Start(h *Host) {
	t.host.Store(h)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.started = true
	t.wg.Add(1)
	go t.acceptLoop()
	for _, p := range *t.peers.Load() {
		t.wg.Add(1)
		go p.run()
	}
}

// Close stops listening, closes every connection and waits for the transport's goroutines.
func (t *TCPTransport) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	t.cancel()
	_ = t.ln.Close()
	t.wg.Wait()
}

// Peers reports every peer, by id.
func (t *TCPTransport) Peers() []PeerStatus {
	peers := *t.peers.Load()
	ids := slices.Sorted(maps.Keys(peers))
	out := make([]PeerStatus, 0, len(ids))
	for _, id := range ids {
		p := peers[id]
		p.mu.Lock()
		meta, addr := maps.Clone(p.meta), p.addr
		p.mu.Unlock()
		out = append(out, PeerStatus{
			ID: id, Addr: addr, Connected: p.connected.Load(), Meta: meta,
			Dropped: p.dropped.Load(), Sent: p.sent.Load(), Frames: p.frames.Load(),
		})
	}
	return out
}

// Connected reports whether the connection to peer id is up (cheap: for callers that ask often).
func (t *TCPTransport) Connected(id uint64) bool {
	p := (*t.peers.Load())[id]
	return p != nil && p.connected.Load()
}

// Send queues msgs for their destinations; it never blocks (see the file comment).
func (t *TCPTransport) Send(group uint64, msgs []*raftpb.Message) {
	var byPeer map[*peer][]*raftpb.Message
	peers := *t.peers.Load()
	for _, m := range msgs {
		p := peers[m.GetTo()]
		if p == nil {
			continue // not a node of the cluster: nothing to tell raft
		}
		if byPeer == nil {
			byPeer = make(map[*peer][]*raftpb.Message, len(peers))
		}
		byPeer[p] = append(byPeer[p], m)
	}
	for p, ms := range byPeer {
		select {
		case p.out <- outBatch{group: group, msgs: ms}:
		default:
			p.drop(outBatch{group: group, msgs: ms})
		}
	}
}

// SendHeartbeats queues a coalesced heartbeat list for node to (heartbeat.go); it never blocks.
func (t *TCPTransport) SendHeartbeats(to uint64, beats []Heartbeat) {
	p := (*t.peers.Load())[to]
	if p == nil {
		return
	}
	p.mu.Lock()
	lists := p.meta[metaBeats] != ""
	leases := p.meta[metaLease] != ""
	p.mu.Unlock()
	if !leases {
		// A peer that predates leases drops the connection on a lease probe (lease.go).
		beats = slices.DeleteFunc(beats, func(b Heartbeat) bool { return b.Lease })
		if len(beats) == 0 {
			return
		}
	}
	if !lists {
		// A peer that predates the lists (its hello does not offer them) gets the messages
		// they stand for, one group at a time.
		for _, b := range beats {
			t.Send(b.Group, []*raftpb.Message{b.message(t.cfg.NodeID, to)})
		}
		return
	}
	select {
	case p.out <- outBatch{beats: beats}:
	default:
		p.drop(outBatch{beats: beats})
	}
}

// drop tells the host that a batch will not reach the peer.
func (p *peer) drop(b outBatch) {
	if b.rpc != nil {
		if b.onDrop != nil {
			b.onDrop()
		}
		return
	}
	if b.beats != nil {
		// Lost heartbeats are not reported: the next ones follow (heartbeat.go).
		p.dropped.Add(uint64(len(b.beats)))
		return
	}
	p.dropped.Add(uint64(len(b.msgs)))
	h := p.t.host.Load()
	if h == nil {
		return
	}
	h.ReportUnreachable(b.group, p.id)
	for _, m := range b.msgs {
		if m.GetType() == raftpb.MsgSnap {
			h.ReportSnapshot(b.group, p.id, true)
		}
	}
}

func (t *TCPTransport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *TCPTransport) untrack(c net.Conn) {
	_ = c.Close()
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

func (t *TCPTransport) hello() []byte {
	meta := maps.Clone(t.cfg.Meta)
	if meta == nil {
		meta = map[string]string{}
	}
	if t.cfg.Advertise != "" {
		meta[metaCluster] = t.cfg.Advertise
	}
	if t.rpc != nil {
		meta[metaRPC] = "1"
	}
	if !t.noBeatOffer {
		meta[metaBeats] = "1"
		meta[metaLease] = "1"
	}
	if h := t.host.Load(); h != nil {
		var b strings.Builder
		for _, m := range h.Members() {
			if m.Addr != "" {
				if b.Len() > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "%d=%s", m.ID, m.Addr)
			}
		}
		meta[metaMembers] = b.String()
	}
	return appendHello(nil, hello{node: t.cfg.NodeID, meta: meta})
}

// learnMembers adds the members a peer's hello lists that this transport does not know (nor
// removed): a node that restarts after a join it missed, or installed the metadata group by
// snapshot, learns where the new members listen from any member it reaches.
func (t *TCPTransport) learnMembers(h hello) {
	for item := range strings.SplitSeq(h.meta[metaMembers], ",") {
		ids, addr, ok := strings.Cut(item, "=")
		id, err := strconv.ParseUint(ids, 10, 64)
		if !ok || err != nil || id == 0 || id == t.cfg.NodeID || addr == "" {
			continue
		}
		if (*t.peers.Load())[id] == nil && !t.isRemoved(id) {
			t.AddPeer(id, addr)
		}
	}
}

// exchangeHello writes our hello and reads the peer's, within the dial timeout.
func (t *TCPTransport) exchangeHello(c net.Conn, br *bufio.Reader) (hello, error) {
	_ = c.SetDeadline(time.Now().Add(t.cfg.DialTimeout))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := c.Write(t.hello()); err != nil {
		return hello{}, fmt.Errorf("write hello: %w", err)
	}
	kind, body, err := readFrame(br, t.cfg.MaxFrame)
	if err != nil {
		return hello{}, fmt.Errorf("read hello: %w", err)
	}
	if kind != kindHello {
		return hello{}, fmt.Errorf("%w: frame kind %d before hello", ErrBadFrame, kind)
	}
	return decodeHello(body)
}

func (t *TCPTransport) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if t.ctx.Err() == nil {
				t.log.Warn("cluster accept failed; no longer accepting peers", zap.Error(err))
			}
			return
		}
		if !t.track(c) {
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			br := bufio.NewReaderSize(liveReader{c, t.cfg.PeerTimeout}, 64<<10)
			h, err := t.exchangeHello(c, br)
			if err != nil {
				t.log.Warn("cluster connection refused", zap.Stringer("from", c.RemoteAddr()), zap.Error(err))
				t.untrack(c)
				return
			}
			if t.isRemoved(h.node) {
				t.log.Info("cluster connection from a removed node: told it so", zap.Uint64("peer", h.node))
				_ = c.SetWriteDeadline(time.Now().Add(t.cfg.DialTimeout))
				_, _ = c.Write(t.goodbye())
				t.untrack(c)
				return
			}
			if h.meta[metaRemoved] != "" {
				t.told(h.node)
				t.untrack(c)
				return
			}
			t.learnMembers(h)
			p := (*t.peers.Load())[h.node]
			if p == nil && h.meta[metaCluster] != "" {
				// A node this one does not know yet (it joins, or this node joins): its
				// hello says where it listens.
				t.AddPeer(h.node, h.meta[metaCluster])
				p = (*t.peers.Load())[h.node]
			}
			if p == nil || h.node > t.cfg.NodeID {
				// Unknown node, or one we dial ourselves: two connections for one pair
				// would race, so the lower id always dials.
				t.log.Warn("cluster connection refused: not a peer that dials this node",
					zap.Uint64("peer", h.node), zap.Stringer("from", c.RemoteAddr()))
				t.untrack(c)
				return
			}
			p.setMeta(h.meta)
			// Replace a connection the writer has not picked up yet.
			select {
			case old := <-p.accepted:
				t.untrack(old.Conn)
			default:
			}
			p.accepted <- &bufConn{Conn: c, br: br}
		}()
	}
}

// liveReader reads a connection with a deadline renewed at each read: a peer that has sent
// nothing, not even a ping, for the timeout is lost, while a large frame (a snapshot) that keeps
// arriving is not cut off.
type liveReader struct {
	c       net.Conn
	timeout time.Duration
}

func (r liveReader) Read(b []byte) (int, error) {
	if err := r.c.SetReadDeadline(time.Now().Add(r.timeout)); err != nil {
		return 0, err
	}
	return r.c.Read(b)
}

// bufConn keeps the reader that already buffered bytes after the hello.
type bufConn struct {
	net.Conn
	br *bufio.Reader
}

func (p *peer) getAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

func (p *peer) setMeta(m map[string]string) {
	p.mu.Lock()
	p.meta = m
	p.mu.Unlock()
}

// run is the peer's writer: it obtains a connection (dialling or accepting), writes batches
// until it fails, and starts over.
func (p *peer) run() {
	defer p.t.wg.Done()
	backoff := 50 * time.Millisecond
	for {
		c := p.connect(&backoff)
		if c == nil {
			return
		}
		p.connected.Store(true)
		p.t.log.Info("cluster peer connected", zap.Uint64("peer", p.id), zap.String("addr", p.getAddr()))
		if h := p.t.host.Load(); h != nil {
			h.PeerUp(p.id)
		}
		err := p.serve(c)
		p.connected.Store(false)
		if h := p.t.host.Load(); h != nil {
			h.PeerDown(p.id)
		}
		if p.t.rpc != nil {
			p.t.rpc.PeerLost(p.id)
		}
		p.t.untrack(c.Conn)
		if p.ctx.Err() != nil {
			return
		}
		p.t.log.Warn("cluster peer connection lost", zap.Uint64("peer", p.id), zap.Error(err))
	}
}

// connect returns a connection with hellos exchanged, or nil when the transport closes. While
// it has none, queued batches are dropped and reported: the peer is unreachable.
func (p *peer) connect(backoff *time.Duration) *bufConn {
	if c := p.next; c != nil {
		p.next = nil
		return c
	}
	dials := p.id > p.t.cfg.NodeID
	for {
		if dials {
			if c := p.dial(); c != nil {
				*backoff = 50 * time.Millisecond
				return c
			}
		}
		var retry <-chan time.Time
		var timer *time.Timer
		if dials {
			timer = time.NewTimer(*backoff)
			retry = timer.C
			*backoff = min(*backoff*2, p.t.cfg.MaxBackoff)
		}
		if c := p.waitAccepted(retry); c != nil || !dials || p.ctx.Err() != nil {
			if timer != nil {
				timer.Stop()
			}
			return c
		}
	}
}

// waitAccepted drops queued batches until a connection is accepted from the peer (returned),
// retry fires or the transport closes (nil).
func (p *peer) waitAccepted(retry <-chan time.Time) *bufConn {
	for {
		select {
		case <-p.ctx.Done():
			return nil
		case b := <-p.out:
			p.drop(b)
		case c := <-p.accepted:
			return c
		case <-retry:
			return nil
		}
	}
}

func (p *peer) dial() *bufConn {
	d := net.Dialer{Timeout: p.t.cfg.DialTimeout}
	addr := p.getAddr()
	c, err := d.DialContext(p.ctx, "tcp", addr)
	if err != nil {
		p.t.log.Debug("cluster dial failed", zap.Uint64("peer", p.id), zap.Error(err))
		return nil
	}
	if !p.t.track(c) {
		return nil
	}
	br := bufio.NewReaderSize(liveReader{c, p.t.cfg.PeerTimeout}, 64<<10)
	h, err := p.t.exchangeHello(c, br)
	if err == nil && h.node != p.id {
		err = fmt.Errorf("%s answered as node %d", addr, h.node)
	}
	if err != nil {
		p.t.log.Warn("cluster handshake failed", zap.Uint64("peer", p.id), zap.Error(err))
		p.t.untrack(c)
		return nil
	}
	p.setMeta(h.meta)
	p.t.learnMembers(h)
	return &bufConn{Conn: c, br: br}
}

// serve reads and writes c until either side fails.
func (p *peer) serve(c *bufConn) error {
	readErr := make(chan error, 1)
	go func() { readErr <- p.read(c) }()
	bw := bufio.NewWriterSize(c.Conn, 256<<10)
	var buf []byte
	var written []outBatch
	ping := time.NewTicker(p.t.cfg.PingInterval)
	defer ping.Stop()
	wrote := false // since the last ping tick
	fail := func(err error) error {
		for _, b := range written {
			p.drop(b)
		}
		_ = c.Close()
		<-readErr
		return err
	}
	for {
		var b outBatch
		select {
		case <-p.ctx.Done():
			if p.gone.Load() {
				_ = c.SetWriteDeadline(time.Now().Add(p.t.cfg.DialTimeout))
				_, _ = bw.Write(p.t.goodbye())
				_ = bw.Flush()
			}
			return fail(p.ctx.Err())
		case err := <-readErr:
			readErr <- err
			return fail(err)
		case nc := <-p.accepted:
			// The peer reconnected (it restarted): this connection is stale.
			p.next = nc
			return fail(errors.New("replaced by a new connection from the peer"))
		case <-ping.C:
			if wrote {
				wrote = false
				continue
			}
			if _, err := bw.Write(appendPing(buf[:0])); err != nil {
				return fail(fmt.Errorf("write ping: %w", err))
			}
			if err := bw.Flush(); err != nil {
				return fail(fmt.Errorf("write ping: %w", err))
			}
			continue
		case b = <-p.out:
		}
		wrote = true
		// Coalesce everything queued into one flush.
		written = written[:0]
		for {
			var err error
			switch {
			case b.rpc != nil:
				buf, err = appendRPC(buf[:0], b.rpc)
			case b.beats != nil:
				buf = appendHeartbeats(buf[:0], b.beats)
			default:
				buf, err = appendMessages(buf[:0], b.group, b.msgs)
			}
			if err != nil {
				p.t.log.Error("raft message not encodable; dropped", zap.Uint64("group", b.group), zap.Error(err))
				p.drop(b)
			} else {
				written = append(written, b)
				if _, err := bw.Write(buf); err != nil {
					return fail(fmt.Errorf("write: %w", err))
				}
			}
			if len(buf) > 1<<20 {
				buf = nil // do not keep a snapshot-sized buffer
			}
			select {
			case b = <-p.out:
				continue
			default:
			}
			break
		}
		if err := bw.Flush(); err != nil {
			return fail(fmt.Errorf("write: %w", err))
		}
		h := p.t.host.Load()
		for _, b := range written {
			if b.rpc != nil {
				continue
			}
			p.sent.Add(uint64(len(b.msgs) + raftBeats(b.beats)))
			p.frames.Add(1)
			for _, m := range b.msgs {
				if m.GetType() == raftpb.MsgSnap && h != nil {
					h.ReportSnapshot(b.group, p.id, false)
				}
			}
		}
		written = written[:0]
	}
}

// read hands every frame from the peer to the host until the connection fails.
func (p *peer) read(c *bufConn) error {
	for {
		kind, body, err := readFrame(c.br, p.t.cfg.MaxFrame)
		if err != nil {
			return err
		}
		if kind == kindPing {
			continue
		}
		if kind == kindRPC {
			if p.t.rpc == nil {
				return fmt.Errorf("%w: RPC frame, but this node did not offer the RPC channel", ErrBadFrame)
			}
			p.t.rpc.ReceiveRPC(p.id, body)
			continue
		}
		if kind == kindHello {
			// Only a goodbye follows the first hello.
			if h, err := decodeHello(body); err == nil && h.node == p.id && h.meta[metaRemoved] != "" {
				p.t.told(p.id)
				return errors.New("removed from the cluster")
			}
		}
		if kind == kindHeartbeats {
			beats, err := decodeHeartbeats(body)
			if err != nil {
				return err
			}
			if h := p.t.host.Load(); h != nil && len(beats) > 0 {
				h.ReceiveHeartbeats(p.id, beats)
			}
			continue
		}
		if kind != kindMessages {
			return fmt.Errorf("%w: unexpected frame kind %d", ErrBadFrame, kind)
		}
		group, msgs, err := decodeMessages(body)
		if err != nil {
			return err
		}
		self := p.t.cfg.NodeID
		keep := msgs[:0]
		for _, m := range msgs {
			if m.GetTo() == self && m.GetFrom() == p.id {
				keep = append(keep, m)
			}
		}
		if len(keep) != len(msgs) {
			return errors.New("peer sent messages not from itself or not to this node")
		}
		if h := p.t.host.Load(); h != nil && len(keep) > 0 {
			h.Receive(group, keep)
		}
	}
}

// told handles a peer's word that this node is no longer a member.
func (t *TCPTransport) told(by uint64) {
	if t.toldRemoved.Swap(true) {
		return
	}
	t.log.Warn("a cluster peer says this node is no longer a member", zap.Uint64("peer", by))
	if h := t.host.Load(); h != nil {
		h.NotifyRemoved()
	}
}
