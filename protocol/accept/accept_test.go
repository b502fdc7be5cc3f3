package accept

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

// flaky fails its first accepts, then serves a real listener.
type flaky struct {
	net.Listener
	fails atomic.Int32
}

func (f *flaky) Accept() (net.Conn, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, errors.New("accept: too many open files")
	}
	return f.Listener.Accept()
}

// Transient accept errors are ridden out; closing the listener ends the loop with nil.
func TestLoopRetriesThenStops(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &flaky{Listener: ln}
	f.fails.Store(3)
	served := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- Loop(f, zap.NewNop(), func() bool { return false }, func(c net.Conn) {
			_ = c.Close()
			served <- struct{}{}
		})
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection served after the accept errors")
	}
	_ = ln.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Loop returned %v after the listener closed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Loop did not return after the listener closed")
	}
}
