package stomp

import (
	"bufio"
	"bytes"
	"net"
	"testing"

	"github.com/go-stomp/stomp/v3/frame"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/auth"
	"github.com/parleymq/parley/protocol/stomp/wire"
)

// BenchmarkPublishConsume drives an in-memory broker's STOMP listener over loopback TCP with
// pre-encoded frames: SENDs of 64-byte bodies to a queue an ack:auto subscription on the same
// connection drains, as protocol/amqp091's benchmark of the same name does, so the two
// adapters' costs per message compare. allocs/op counts the server's work per message.
func BenchmarkPublishConsume(b *testing.B) {
	core, err := broker.New(zap.NewNop(), broker.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	s := NewServer(DefaultConfig(), core, auth.DefaultStore(), zap.NewNop())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	b.Cleanup(func() { s.Close(); core.Close() })
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	r := wire.NewReader(bufio.NewReader(nc), wire.Limits{})
	next := func() *frame.Frame {
		for {
			f, err := r.Read()
			if err != nil {
				b.Fatal(err)
			}
			if f != nil {
				return f
			}
		}
	}
	write := func(p []byte) {
		if _, err := nc.Write(p); err != nil {
			b.Fatal(err)
		}
	}
	write([]byte("CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00"))
	if f := next(); f.Command != frame.CONNECTED {
		b.Fatalf("got %s", f.Command)
	}
	r.SetVersion(wire.V12)
	write([]byte("SUBSCRIBE\nid:0\ndestination:/queue/bench\nauto-delete:true\ndurable:false\nreceipt:s\n\n\x00"))
	if f := next(); f.Command != frame.RECEIPT {
		b.Fatalf("got %s %q", f.Command, f.Body)
	}
	const batch = 100
	send := frame.New(frame.SEND, frame.Destination, "/queue/bench")
	send.Body = make([]byte, 64)
	frames := bytes.Repeat(wire.AppendFrame(nil, send, wire.V12), batch)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		write(frames)
		for got := 0; got < batch; got++ {
			if f := next(); f.Command != frame.MESSAGE {
				b.Fatalf("got %s %q", f.Command, f.Body)
			}
		}
	}
}
