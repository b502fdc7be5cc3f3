package stomp

import (
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/auth"
)

// FuzzSession feeds arbitrary bytes to a logged-in STOMP session of an in-memory broker.
// Whatever arrives, the server must not panic (a recovered panic is logged at error level and
// fails the run) and must end the connection within bounded time.
func FuzzSession(f *testing.F) {
	core, logs := observer.New(zap.ErrorLevel)
	log := zap.New(core)
	b, err := broker.New(log, broker.DefaultConfig())
	if err != nil {
		f.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Limits.MaxBody = 4096
	s := NewServer(cfg, b, auth.DefaultStore(), log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	f.Cleanup(func() { s.Close(); b.Close() })
	for _, seed := range []string{
		"SUBSCRIBE\nid:0\ndestination:/queue/q\nack:client\n\n\x00SEND\ndestination:/queue/q\nreceipt:1\n\nhi\x00",
		"SEND\ndestination:/topic/a.b\ncontent-length:3\n\na\x00b\x00",
		"BEGIN\ntransaction:t\n\n\x00SEND\ndestination:/queue/q\ntransaction:t\n\nx\x00COMMIT\ntransaction:t\n\n\x00",
		"SUBSCRIBE\nid:1\ndestination:/temp-queue/x\n\n\x00SEND\ndestination:/queue/q\nreply-to:/temp-queue/r\n\n\x00",
		"ACK\nid:T_0@@session-x@@1\n\n\x00NACK\nid:nonsense\n\n\x00",
		"SUBSCRIBE\nid:d\ndestination:/topic/k\ndurable:true\nx-max-length:1\n\n\x00UNSUBSCRIBE\nid:d\ndurable:true\n\n\x00",
		"SEND\ndestination:/exchange/amq.direct/k\npriority:9\npersistent:true\n\n\x00",
		"\n\n\r\nFROB\n\n\x00",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := nc.Write([]byte("CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")); err != nil {
			t.Fatal(err)
		}
		_, _ = nc.Write(data)
		_, _ = nc.Write([]byte("\x00\nDISCONNECT\n\n\x00"))
		// EOF ends a frame the input left half-written.
		_ = nc.(*net.TCPConn).CloseWrite()
		if _, err := io.Copy(io.Discard, nc); err != nil {
			t.Fatalf("the server did not end the connection: %v", err)
		}
		if n := logs.FilterMessageSnippet("panic").Len(); n > 0 {
			t.Fatalf("server panicked: %v", logs.All()[0].ContextMap())
		}
	})
}
