package accept

import (
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
)

// Close stops the listener, refuses new connections, hands back the live ones, and Wait sees
// them end; a second Close does nothing.
func TestRegistryCloseReachesAndWaitsForConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var reg Registry[net.Conn]
	served := make(chan net.Conn, 1)
	served2 := make(chan struct{})
	serveDone := make(chan error, 1)
	go func() {
		serveDone <- reg.Serve(ln, zap.NewNop(), func(nc net.Conn) {
			if !reg.Add(nc) {
				_ = nc.Close()
				return
			}
			defer reg.Done(nc)
			served <- nc
			_, _ = nc.Read(make([]byte, 1)) // until closed
			close(served2)
		})
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var nc net.Conn
	select {
	case nc = <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("connection not served")
	}
	if got := reg.Conns(); len(got) != 1 || got[0] != nc {
		t.Fatalf("Conns = %v, want the one connection", got)
	}
	conns, first := reg.Close()
	if !first || len(conns) != 1 || conns[0] != nc {
		t.Fatalf("Close = %v, %v; want the live connection, true", conns, first)
	}
	if reg.Wait(50 * time.Millisecond) {
		t.Fatal("Wait returned true while a connection is still served")
	}
	_ = nc.Close()
	if !reg.Wait(10 * time.Second) {
		t.Fatal("Wait timed out after the connection ended")
	}
	<-served2
	select {
	case err := <-serveDone:
		if err != nil {
			t.Fatalf("Serve = %v, want nil after Close", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	if reg.Add(nc) {
		t.Fatal("Add accepted a connection after Close")
	}
	if _, again := reg.Close(); again {
		t.Fatal("second Close reported first")
	}
}
