package amqp091

import (
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/amqp091/wire"
	"github.com/parleymq/parley/protocol/auth"
)

// FuzzConnection feeds arbitrary bytes to an open connection (after the handshake and
// channel.open). Whatever arrives, the server must not panic: a recovered panic is logged as a
// bug at error level, which fails the run.
func FuzzConnection(f *testing.F) {
	core, logs := observer.New(zap.ErrorLevel)
	log := zap.New(core)
	b, err := broker.New(log, broker.DefaultConfig())
	if err != nil {
		f.Fatal(err)
	}
	s := NewServer(DefaultConfig(), b, auth.DefaultStore(), log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	f.Cleanup(func() { s.Close(); b.Close() })
	url := "amqp://guest:guest@" + ln.Addr().String() + "/"

	seed := func(ms ...wire.Method) []byte {
		var out []byte
		for _, m := range ms {
			out = wire.AppendMethodFrame(out, 1, m)
		}
		return out
	}
	f.Add(seed(&wire.QueueDeclare{Queue: "q"}, &wire.BasicConsume{Queue: "q"}, &wire.BasicAck{DeliveryTag: 1}))
	f.Add(wire.AppendContent(nil, 1, &wire.BasicPublish{RoutingKey: "q"}, &wire.Properties{}, []byte("body"), 4096))
	f.Add(seed(&wire.ConfirmSelect{}, &wire.TxSelect{}, &wire.BasicQos{PrefetchCount: 1, Global: true}))
	f.Add(seed(&wire.ChannelClose{}, &wire.ChannelCloseOk{}, &wire.ChannelOpen{}))
	f.Add([]byte{wire.FrameHeader, 0, 1, 0, 0, 0, 2, 0, 60, wire.FrameEnd})
	f.Add([]byte{wire.FrameMethod, 0, 0, 0, 0, 0, 4, 0, 10, 0, 50, wire.FrameEnd})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := rawDial(t, url)
		c.open("guest")
		_ = c.nc.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.nc.Write(data)
		c.method(0, &wire.ConnectionClose{ReplyCode: 200, ReplyText: "bye"})
		// EOF ends a frame the input left half-written without waiting for the deadline.
		_ = c.nc.(*net.TCPConn).CloseWrite()
		c.expectEOF()
		if n := logs.FilterMessageSnippet("panic").Len(); n > 0 {
			t.Fatalf("server panicked: %v", logs.All()[0].ContextMap())
		}
	})
}
