package cluster

// RPC: requests, replies and one-way notifications between nodes, carried by TCPTransport's RPC
// channel beside the raft messages (DESIGN.md §5: "one connection per peer multiplexes every
// group"; the broker's forwarded queue operations and relayed deliveries ride the same one).
//
// A message is
//
//	type    byte: rpcCall, rpcReply, rpcError or rpcNotify
//	id      uvarint (rpcCall, rpcReply, rpcError): the caller's number for the call
//	method  uvarint length, bytes (rpcCall, rpcNotify)
//	body    the rest (rpcError: the error's text)
//
// Ordering: the messages one node sends another arrive in the order sent, and the calls and
// notifications from one peer are handled one at a time in that order by the peer's own
// dispatcher goroutine (so a handler may block, on a full queue say, without stalling the
// transport's reader, which also carries the raft messages, or other peers). Replies complete
// their calls on the reader, at once.
//
// Loss: when the connection to a peer ends, every call to it still pending fails with
// ErrPeerLost, and the handlers registered with OnPeerLost run on the peer's dispatcher after
// every message that arrived on the lost connection: whoever keeps state for a peer (the queue
// host's sessions) ends it there. A message sent while the connection was going down may still
// arrive on the next one; callers that care (the broker's proxies) number their sessions.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

const (
	rpcCall   byte = 1
	rpcReply  byte = 2
	rpcError  byte = 3
	rpcNotify byte = 4
)

// ErrPeerLost fails a call whose peer's connection ended before it answered: the call may or
// may not have been carried out.
var ErrPeerLost = errors.New("cluster: connection to peer lost; the call may or may not have been carried out")

// RemoteError is an error a handler returned on another node.
type RemoteError struct {
	Node uint64
	Msg  string
}

func (e *RemoteError) Error() string { return fmt.Sprintf("node %d: %s", e.Node, e.Msg) }

// RPCFunc handles a call or a notification from node from. It must call reply exactly once
// for a call (later, from any goroutine, is fine); for a notification reply does nothing.
// ctx ends when the RPC endpoint closes.
type RPCFunc func(ctx context.Context, from uint64, body []byte, reply func(body []byte, err error))

// RPC is a node's endpoint of the RPC channel. Create it with NewRPC before starting the
// transport, register handlers, then use it.
type RPC struct {
	t      *TCPTransport
	log    *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	nextID   uint64
	pending  map[uint64]*pendingCall
	handlers map[string]RPCFunc
	lost     []func(peer uint64)
	inboxes  map[uint64]*rpcInbox
}

type pendingCall struct {
	to uint64
	cb func([]byte, error)
}

// rpcMsg is a decoded RPC message.
type rpcMsg struct {
	typ    byte
	id     uint64
	method string
	body   []byte
}

// rpcItem is a message to dispatch, or (lost) the end of the peer's connection.
type rpcItem struct {
	msg  rpcMsg
	lost bool
}

// rpcInbox is one peer's dispatch queue; a goroutine runs while it has items.
type rpcInbox struct {
	items   []rpcItem
	running bool
}

// NewRPC makes the RPC endpoint of transport t and registers it as t's RPC handler; call it
// before t.Start.
func NewRPC(t *TCPTransport, log *zap.Logger) *RPC {
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &RPC{
		t: t, log: log, ctx: ctx, cancel: cancel,
		pending:  map[uint64]*pendingCall{},
		handlers: map[string]RPCFunc{},
		inboxes:  map[uint64]*rpcInbox{},
	}
	t.SetRPC(r)
	return r
}

// Close fails the pending calls and ends the handlers' context.
func (r *RPC) Close() {
	r.cancel()
	r.mu.Lock()
	calls := r.pending
	r.pending = map[uint64]*pendingCall{}
	r.mu.Unlock()
	for _, c := range calls {
		c.cb(nil, fmt.Errorf("rpc endpoint closed: %w", ErrStopped))
	}
}

// Handle registers fn for method.
func (r *RPC) Handle(method string, fn RPCFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handlers[method] = fn
}

// OnPeerLost registers fn, called on a peer's dispatcher after the last message of each of its
// connections that ends.
func (r *RPC) OnPeerLost(fn func(peer uint64)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost = append(r.lost, fn)
}

// Call calls method on node to and waits for its reply.
func (r *RPC) Call(ctx context.Context, to uint64, method string, body []byte) ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	if err := r.CallAsync(ctx, to, method, body, func(b []byte, err error) { ch <- res{b, err} }); err != nil {
		return nil, err
	}
	select {
	case x := <-ch:
		return x.b, x.err
	case <-ctx.Done():
		return nil, fmt.Errorf("rpc %s to node %d: %w", method, to, ctx.Err())
	}
}

// CallAsync sends a call to node to; cb gets the reply (or ErrPeerLost, or a *RemoteError),
// once, on the transport's reader or the failing goroutine: it must not block. An error
// returned means the call was not sent and cb will not be called. ctx bounds only the wait
// for room in the peer's queue.
func (r *RPC) CallAsync(ctx context.Context, to uint64, method string, body []byte, cb func([]byte, error)) error {
	r.mu.Lock()
	r.nextID++
	id := r.nextID
	r.pending[id] = &pendingCall{to: to, cb: cb}
	r.mu.Unlock()
	msg := appendRPCMsg(nil, rpcMsg{typ: rpcCall, id: id, method: method, body: body})
	if err := r.t.SendRPC(ctx, to, msg, func() { r.complete(id, nil, ErrPeerLost) }); err != nil {
		r.mu.Lock()
		delete(r.pending, id)
		r.mu.Unlock()
		return fmt.Errorf("rpc %s: %w", method, err)
	}
	return nil
}

// Notify sends a one-way message to node to.
func (r *RPC) Notify(ctx context.Context, to uint64, method string, body []byte) error {
	msg := appendRPCMsg(nil, rpcMsg{typ: rpcNotify, method: method, body: body})
	if err := r.t.SendRPC(ctx, to, msg, nil); err != nil {
		return fmt.Errorf("rpc notify %s: %w", method, err)
	}
	return nil
}

func (r *RPC) complete(id uint64, b []byte, err error) {
	r.mu.Lock()
	c := r.pending[id]
	delete(r.pending, id)
	r.mu.Unlock()
	if c != nil {
		c.cb(b, err)
	}
}

// ReceiveRPC implements RPCHandler.
func (r *RPC) ReceiveRPC(from uint64, payload []byte) {
	m, err := decodeRPCMsg(payload)
	if err != nil {
		r.log.Warn("bad rpc message from peer; ignored", zap.Uint64("peer", from), zap.Error(err))
		return
	}
	switch m.typ {
	case rpcReply:
		r.completeFrom(from, m.id, m.body, nil)
	case rpcError:
		r.completeFrom(from, m.id, nil, &RemoteError{Node: from, Msg: string(m.body)})
	default:
		r.enqueue(from, rpcItem{msg: m})
	}
}

// completeFrom completes call id if it was sent to from (a peer cannot answer another's call).
func (r *RPC) completeFrom(from, id uint64, b []byte, err error) {
	r.mu.Lock()
	c := r.pending[id]
	if c == nil || c.to != from {
		r.mu.Unlock()
		return
	}
	delete(r.pending, id)
	r.mu.Unlock()
	c.cb(b, err)
}

// PeerLost implements RPCHandler.
func (r *RPC) PeerLost(peer uint64) {
	r.mu.Lock()
	var failed []*pendingCall
	for id, c := range r.pending {
		if c.to == peer {
			failed = append(failed, c)
			delete(r.pending, id)
		}
	}
	r.mu.Unlock()
	for _, c := range failed {
		c.cb(nil, ErrPeerLost)
	}
	r.enqueue(peer, rpcItem{lost: true})
}

func (r *RPC) enqueue(peer uint64, it rpcItem) {
	r.mu.Lock()
	in := r.inboxes[peer]
	if in == nil {
		in = &rpcInbox{}
		r.inboxes[peer] = in
	}
	in.items = append(in.items, it)
	start := !in.running
	in.running = true
	r.mu.Unlock()
	if start {
		go r.dispatch(peer, in)
	}
}

// dispatch handles peer's items in order until its inbox is empty.
func (r *RPC) dispatch(peer uint64, in *rpcInbox) {
	for {
		r.mu.Lock()
		if len(in.items) == 0 {
			in.running = false
			in.items = nil
			r.mu.Unlock()
			return
		}
		it := in.items[0]
		in.items[0] = rpcItem{}
		in.items = in.items[1:]
		var fn RPCFunc
		var lost []func(uint64)
		if it.lost {
			lost = r.lost
		} else {
			fn = r.handlers[it.msg.method]
		}
		r.mu.Unlock()
		switch {
		case it.lost:
			for _, f := range lost {
				f(peer)
			}
		case it.msg.typ == rpcNotify:
			if fn != nil {
				fn(r.ctx, peer, it.msg.body, func([]byte, error) {})
			}
		default:
			id := it.msg.id
			if fn == nil {
				r.reply(peer, id, nil, fmt.Errorf("unknown rpc method %q", it.msg.method))
				continue
			}
			var once sync.Once
			fn(r.ctx, peer, it.msg.body, func(b []byte, err error) {
				once.Do(func() { r.reply(peer, id, b, err) })
			})
		}
	}
}

// reply answers call id of peer. A reply that cannot be sent is lost with the connection, and
// the caller hears ErrPeerLost.
func (r *RPC) reply(peer, id uint64, b []byte, err error) {
	m := rpcMsg{typ: rpcReply, id: id, body: b}
	if err != nil {
		m = rpcMsg{typ: rpcError, id: id, body: []byte(err.Error())}
	}
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	if err := r.t.SendRPC(ctx, peer, appendRPCMsg(nil, m), nil); err != nil {
		r.log.Debug("rpc reply not sent", zap.Uint64("peer", peer), zap.Error(err))
	}
}

func appendRPCMsg(buf []byte, m rpcMsg) []byte {
	buf = append(buf, m.typ)
	if m.typ != rpcNotify {
		buf = binary.AppendUvarint(buf, m.id)
	}
	if m.typ == rpcCall || m.typ == rpcNotify {
		buf = appendBytes(buf, []byte(m.method))
	}
	return append(buf, m.body...)
}

func decodeRPCMsg(b []byte) (rpcMsg, error) {
	if len(b) == 0 {
		return rpcMsg{}, fmt.Errorf("%w: empty rpc message", ErrBadFrame)
	}
	m := rpcMsg{typ: b[0]}
	if m.typ < rpcCall || m.typ > rpcNotify {
		return rpcMsg{}, fmt.Errorf("%w: rpc message type %d", ErrBadFrame, m.typ)
	}
	r := wireReader{b: b[1:]}
	if m.typ != rpcNotify {
		m.id = r.uvarint()
	}
	if m.typ == rpcCall || m.typ == rpcNotify {
		m.method = string(r.bytes())
	}
	if r.err != nil {
		return rpcMsg{}, r.err
	}
	m.body = r.b
	return m, nil
}
