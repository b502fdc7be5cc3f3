package websocket

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
)

// echoRoute answers every chunk it reads with "<name>:<chunk>" and records the remote address.
func echoRoute(name string, binary bool, remotes chan<- net.Addr) Route {
	return Route{Subprotocol: name, Binary: binary, Handler: func(c net.Conn) {
		defer c.Close()
		remotes <- c.RemoteAddr()
		buf := make([]byte, 1024)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(name + ":" + string(buf[:n]))); err != nil {
				return
			}
		}
	}}
}

func startGateway(t *testing.T, cfg Config, routes ...Route) string {
	t.Helper()
	g := New(cfg, zap.NewNop(), routes...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Close)
	return "ws://" + ln.Addr().String() + "/ws"
}

func dial(t *testing.T, url string, origin string, protos ...string) (*websocket.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: protos, HTTPHeader: h})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, err
}

func roundTrip(t *testing.T, c *websocket.Conn, typ websocket.MessageType, msg string) (websocket.MessageType, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	rt, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return rt, string(b)
}

func TestRoutesBySubprotocol(t *testing.T) {
	remotes := make(chan net.Addr, 8)
	url := startGateway(t, Config{}, echoRoute("v12.stomp", false, remotes), echoRoute("mqtt", true, remotes))
	c, err := dial(t, url, "", "nope", "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	if c.Subprotocol() != "mqtt" {
		t.Fatalf("negotiated %q", c.Subprotocol())
	}
	if typ, got := roundTrip(t, c, websocket.MessageBinary, "x"); typ != websocket.MessageBinary || got != "mqtt:x" {
		t.Fatalf("got %v %q", typ, got)
	}
	// A text route reads binary and text messages and writes text.
	c, err = dial(t, url, "", "v12.stomp")
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []websocket.MessageType{websocket.MessageText, websocket.MessageBinary} {
		if rt, got := roundTrip(t, c, typ, "y"); rt != websocket.MessageText || got != "v12.stomp:y" {
			t.Fatalf("%v in: got %v %q", typ, rt, got)
		}
	}
	// The handler sees the client's real address (guest may only log in from loopback).
	for i := 0; i < 2; i++ {
		a := <-remotes
		if tcp, ok := a.(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
			t.Fatalf("remote address %v (%T)", a, a)
		}
	}
	// No subprotocol and no fallback: closed without a session.
	c, err = dial(t, url, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("got %v, want a policy-violation close", err)
	}
}

func TestFallbackSubprotocol(t *testing.T) {
	url := startGateway(t, Config{Fallback: "v12.stomp"}, echoRoute("v12.stomp", false, make(chan net.Addr, 1)))
	c, err := dial(t, url, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, got := roundTrip(t, c, websocket.MessageText, "z"); got != "v12.stomp:z" {
		t.Fatalf("got %q", got)
	}
}

func TestOrigins(t *testing.T) {
	route := echoRoute("v12.stomp", false, make(chan net.Addr, 8))
	url := startGateway(t, Config{}, route)
	host := strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws")
	if _, err := dial(t, url, "http://"+host, "v12.stomp"); err != nil {
		t.Fatalf("same host refused: %v", err)
	}
	if _, err := dial(t, url, "http://evil.example", "v12.stomp"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("foreign origin: got %v, want 403", err)
	}
	url = startGateway(t, Config{AllowedOrigins: []string{"*.example.com"}}, route)
	if _, err := dial(t, url, "https://app.example.com", "v12.stomp"); err != nil {
		t.Fatalf("allowed origin refused: %v", err)
	}
	if _, err := dial(t, url, "https://example.org", "v12.stomp"); err == nil {
		t.Fatal("origin outside the patterns accepted")
	}
}

// A passed read deadline ends the connection (the STOMP session's handshake and heart-beat
// timeouts rely on it) and unblocks a pending Read.
func TestReadDeadlineEndsConnection(t *testing.T) {
	done := make(chan error, 1)
	route := Route{Subprotocol: "v12.stomp", Handler: func(c net.Conn) {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := io.ReadAll(c)
		done <- err
	}}
	url := startGateway(t, Config{}, route)
	c, err := dial(t, url, "", "v12.stomp")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after its deadline")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := c.Read(ctx); err == nil {
		t.Fatal("connection still open after the deadline")
	}
}
