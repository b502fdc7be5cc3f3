package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// rpcNode is a node with a transport, a host (no groups) and, unless noRPC, an RPC endpoint.
type rpcNode struct {
	tr   *TCPTransport
	host *Host
	rpc  *RPC
}

func startRPCNodes(t *testing.T, n int, noRPC map[uint64]bool) map[uint64]*rpcNode {
	t.Helper()
	peers := map[uint64]string{}
	lns := map[uint64]net.Listener{}
	for id := uint64(1); id <= uint64(n); id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[id], peers[id] = ln, ln.Addr().String()
	}
	nodes := map[uint64]*rpcNode{}
	for id := uint64(1); id <= uint64(n); id++ {
		tr, err := NewTCPTransport(TCPConfig{NodeID: id, Listener: lns[id], Peers: peers, MaxBackoff: 100 * time.Millisecond}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		eng := openEngine(t, t.TempDir(), vfs.Default)
		h := startHost(t, Config{NodeID: id, Peers: peers, Transport: tr, TickInterval: 10 * time.Millisecond}, eng)
		nd := &rpcNode{tr: tr, host: h}
		if !noRPC[id] {
			nd.rpc = NewRPC(tr, testLogger(t))
		}
		tr.Start(h)
		t.Cleanup(func() {
			if nd.rpc != nil {
				nd.rpc.Close()
			}
			tr.Close()
			h.Stop()
			_ = eng.Close()
		})
		nodes[id] = nd
	}
	return nodes
}

func waitConnected(t *testing.T, ctx context.Context, tr *TCPTransport, ids ...uint64) {
	t.Helper()
	waitFor(t, ctx, "peers connected", func() bool {
		up := map[uint64]bool{}
		for _, p := range tr.Peers() {
			up[p.ID] = p.Connected
		}
		for _, id := range ids {
			if !up[id] {
				return false
			}
		}
		return true
	})
}

// TestRPCOverTCP: calls and replies between three nodes over real loopback TCP, remote errors,
// unknown methods, and notifications handled in the order sent, interleaved with calls.
func TestRPCOverTCP(t *testing.T) {
	ctx := testContext(t)
	nodes := startRPCNodes(t, 3, nil)
	var mu sync.Mutex
	seen := map[uint64][]string{}
	for id, nd := range nodes {
		nd.rpc.Handle("echo", func(_ context.Context, from uint64, body []byte, reply func([]byte, error)) {
			reply(append([]byte(fmt.Sprintf("%d<-%d:", id, from)), body...), nil)
		})
		nd.rpc.Handle("fail", func(_ context.Context, _ uint64, body []byte, reply func([]byte, error)) {
			reply(nil, errors.New(string(body)))
		})
		nd.rpc.Handle("note", func(_ context.Context, from uint64, body []byte, reply func([]byte, error)) {
			mu.Lock()
			seen[from] = append(seen[from], string(body))
			mu.Unlock()
			reply(nil, nil) // a no-op for a notification
		})
	}
	waitConnected(t, ctx, nodes[1].tr, 2, 3)
	waitConnected(t, ctx, nodes[2].tr, 1, 3)
	for _, to := range []uint64{2, 3} {
		waitFor(t, ctx, "rpc offered", func() bool {
			_, err := nodes[1].rpc.Call(ctx, to, "echo", nil)
			return err == nil
		})
		got, err := nodes[1].rpc.Call(ctx, to, "echo", []byte("hi"))
		if want := fmt.Sprintf("%d<-1:hi", to); err != nil || string(got) != want {
			t.Fatalf("echo to %d: %q, %v; want %q", to, got, err, want)
		}
	}
	_, err := nodes[2].rpc.Call(ctx, 3, "fail", []byte("no such queue"))
	var re *RemoteError
	if !errors.As(err, &re) || re.Node != 3 || re.Msg != "no such queue" {
		t.Fatalf("remote error: %v", err)
	}
	if _, err := nodes[2].rpc.Call(ctx, 1, "nope", nil); !errors.As(err, &re) {
		t.Fatalf("unknown method: %v", err)
	}
	// Order: notifications and calls from node 2 to node 1, pipelined, are handled as sent.
	const n = 2000
	var wg sync.WaitGroup
	for i := range n {
		if i%100 == 99 {
			wg.Add(1)
			if err := nodes[2].rpc.CallAsync(ctx, 1, "note", []byte(fmt.Sprint(i)), func([]byte, error) { wg.Done() }); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := nodes[2].rpc.Notify(ctx, 1, "note", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(seen[2]) != n {
		t.Fatalf("node 1 handled %d of node 2's %d messages before the last call's reply", len(seen[2]), n)
	}
	for i, s := range seen[2] {
		if s != fmt.Sprint(i) {
			t.Fatalf("message %d handled as %s: out of order", i, s)
		}
	}
}

// TestRPCPeerLost: a call pending when the peer's connection ends fails with ErrPeerLost, the
// OnPeerLost hooks run on both sides, and a handler that blocks holds up only its peer's
// messages, not another peer's nor the raft messages' reader.
func TestRPCPeerLost(t *testing.T) {
	ctx := testContext(t)
	nodes := startRPCNodes(t, 3, nil)
	block := make(chan struct{})
	nodes[2].rpc.Handle("hang", func(_ context.Context, _ uint64, _ []byte, reply func([]byte, error)) {
		<-block
		reply(nil, nil)
	})
	nodes[2].rpc.Handle("echo", func(_ context.Context, _ uint64, body []byte, reply func([]byte, error)) { reply(body, nil) })
	lost := make(chan uint64, 8)
	nodes[1].rpc.OnPeerLost(func(p uint64) { lost <- p })
	waitConnected(t, ctx, nodes[1].tr, 2)
	waitConnected(t, ctx, nodes[3].tr, 2)
	waitFor(t, ctx, "rpc offered", func() bool {
		_, err1 := nodes[1].rpc.Call(ctx, 2, "echo", nil)
		_, err3 := nodes[3].rpc.Call(ctx, 2, "echo", nil)
		return err1 == nil && err3 == nil
	})
	res := make(chan error, 1)
	if err := nodes[1].rpc.CallAsync(ctx, 2, "hang", nil, func(_ []byte, err error) { res <- err }); err != nil {
		t.Fatal(err)
	}
	// Node 2's dispatcher for node 1 is stuck in "hang"; node 3's calls still go through.
	if b, err := nodes[3].rpc.Call(ctx, 2, "echo", []byte("x")); err != nil || string(b) != "x" {
		t.Fatalf("echo from node 3 while node 1's call hangs: %q, %v", b, err)
	}
	nodes[2].tr.Close()
	select {
	case err := <-res:
		if !errors.Is(err, ErrPeerLost) {
			t.Fatalf("pending call: %v, want ErrPeerLost", err)
		}
	case <-ctx.Done():
		t.Fatal("pending call never failed after its peer closed")
	}
	select {
	case p := <-lost:
		if p != 2 {
			t.Fatalf("lost peer %d, want 2", p)
		}
	case <-ctx.Done():
		t.Fatal("OnPeerLost not called")
	}
	close(block)
	if _, err := nodes[1].rpc.Call(ctx, 2, "echo", nil); !errors.Is(err, ErrPeerUnavailable) {
		t.Fatalf("call to a closed peer: %v, want ErrPeerUnavailable", err)
	}
}

// TestRPCOldPeer: a node without the RPC channel (an older version) still connects and
// exchanges raft messages' hellos; a call to it fails at once, saying why.
func TestRPCOldPeer(t *testing.T) {
	ctx := testContext(t)
	nodes := startRPCNodes(t, 2, map[uint64]bool{2: true})
	waitConnected(t, ctx, nodes[1].tr, 2)
	_, err := nodes[1].rpc.Call(ctx, 2, "echo", nil)
	if !errors.Is(err, ErrPeerUnavailable) {
		t.Fatalf("call to a node without the RPC channel: %v", err)
	}
}

// FuzzDecodeRPCMsg: an RPC message from a peer decodes to one that encodes back to the same
// bytes, or is refused; it never panics.
func FuzzDecodeRPCMsg(f *testing.F) {
	f.Add(appendRPCMsg(nil, rpcMsg{typ: rpcCall, id: 7, method: "q.publish", body: []byte("body")}))
	f.Add(appendRPCMsg(nil, rpcMsg{typ: rpcReply, id: 1 << 40, body: []byte{0, 1}}))
	f.Add(appendRPCMsg(nil, rpcMsg{typ: rpcError, id: 3, body: []byte("no")}))
	f.Add(appendRPCMsg(nil, rpcMsg{typ: rpcNotify, method: "q.deliver"}))
	f.Add([]byte{rpcCall, 0x80})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := decodeRPCMsg(in)
		if err != nil {
			return
		}
		if out := appendRPCMsg(nil, m); !bytes.Equal(out, in) {
			// A non-minimal varint decodes but encodes shorter; anything else is a bug.
			m2, err := decodeRPCMsg(out)
			if err != nil || m2.typ != m.typ || m2.id != m.id || m2.method != m.method || !bytes.Equal(m2.body, m.body) {
				t.Fatalf("%x decoded to %+v, which re-encodes to %x", in, m, out)
			}
		}
	})
}
