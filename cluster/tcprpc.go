package cluster

import (
	"context"
	"errors"
	"fmt"
)

// The RPC channel's side of TCPTransport: opaque messages (kindRPC frames, wire.go) on the same
// connection per peer as the raft messages, in the same per-peer queue, so they are written in
// the order they were sent and never open a second connection. What they mean is rpc.go's
// business.

// metaRPC is the hello key by which a node says it reads kindRPC frames.
const metaRPC = "rpc"

// ErrPeerUnavailable reports that an RPC message cannot be sent to a peer: it is not a member,
// not connected, or it did not offer the RPC channel (a node that predates it).
var ErrPeerUnavailable = errors.New("cluster: peer unavailable for RPC")

// RPCHandler receives the RPC channel's messages from a TCPTransport.
type RPCHandler interface {
	// ReceiveRPC is called on the peer's reader goroutine with each RPC message, in the order
	// the peer sent them. It must not block: the raft messages of every group share that
	// reader. payload is the handler's to keep.
	ReceiveRPC(from uint64, payload []byte)
	// PeerLost is called when a connection to peer ends: messages sent on it may or may not
	// have arrived, and none of its later messages will.
	PeerLost(peer uint64)
}

// SetRPC makes h receive the RPC channel's messages; call it before Start. Only then does the
// transport offer the channel to its peers (in its hello).
func (t *TCPTransport) SetRPC(h RPCHandler) { t.rpc = h }

// SendRPC queues payload for peer to, behind whatever is queued for it. It blocks while the
// peer's queue is full, until ctx ends. It fails at once when the peer is not connected or does
// not read RPC frames. After it returns nil the message may still be lost with the connection:
// onDrop (if set) is called when it is known not to have been written; otherwise the
// handler's PeerLost says the connection that carried it ended.
func (t *TCPTransport) SendRPC(ctx context.Context, to uint64, payload []byte, onDrop func()) error {
	p := (*t.peers.Load())[to]
	if p == nil {
		return fmt.Errorf("%w: node %d is not a peer", ErrPeerUnavailable, to)
	}
	if !p.connected.Load() {
		return fmt.Errorf("%w: node %d is not connected", ErrPeerUnavailable, to)
	}
	p.mu.Lock()
	ok := p.meta[metaRPC] != ""
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: node %d does not offer the RPC channel (an older version?)", ErrPeerUnavailable, to)
	}
	select {
	case p.out <- outBatch{rpc: payload, onDrop: onDrop}:
		return nil
	case <-p.ctx.Done():
		return fmt.Errorf("%w: node %d: %v", ErrPeerUnavailable, to, p.ctx.Err())
	case <-ctx.Done():
		return fmt.Errorf("send rpc to node %d: %w", to, ctx.Err())
	}
}
