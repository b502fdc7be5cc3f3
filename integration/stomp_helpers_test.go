package integration

import (
	"bufio"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"
	sframe "github.com/go-stomp/stomp/v3/frame"
)

// stompAddrEnv points the STOMP tests at an external broker's STOMP listener (with
// PARLEY_TEST_AMQP_URL pointing at the same broker's AMQP listener).
const stompAddrEnv = "PARLEY_TEST_STOMP_ADDR"

// freeAddr returns 127.0.0.1:port with a port free at the time of the call.
func freeAddr(t testing.TB) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("picking a port: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// waitListening waits (bounded) until addr accepts connections.
func waitListening(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startSTOMP starts parley with a STOMP listener and returns it and the listener's address.
func startSTOMP(t testing.TB, extraArgs ...string) (*Server, string) {
	t.Helper()
	if ExternalURL() != "" {
		addr := os.Getenv(stompAddrEnv)
		if addr == "" {
			t.Skipf("%s is set but %s is not", ExternalURLEnv, stompAddrEnv)
		}
		return StartParley(t), addr
	}
	addr := freeAddr(t)
	s := StartParley(t, append([]string{"--stomp", addr}, extraArgs...)...)
	waitListening(t, addr)
	return s, addr
}

// stompDial connects a go-stomp client as guest to vhost "/", disconnected at t.Cleanup.
func stompDial(t testing.TB, addr string, opts ...func(*stomp.Conn) error) *stomp.Conn {
	t.Helper()
	all := append([]func(*stomp.Conn) error{
		stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"),
		stomp.ConnOpt.HeartBeat(0, 0),
	}, opts...)
	c, err := stomp.Dial("tcp", addr, all...)
	if err != nil {
		t.Fatalf("stomp dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.MustDisconnect() })
	return c
}

// stompRecv reads one message from a subscription within waitTimeout.
func stompRecv(t testing.TB, sub *stomp.Subscription) *stomp.Message {
	t.Helper()
	select {
	case m, ok := <-sub.C:
		if !ok {
			t.Fatalf("subscription %s closed", sub.Id())
		}
		if m.Err != nil {
			t.Fatalf("subscription %s: %v", sub.Id(), m.Err)
		}
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no message on subscription %s within %v", sub.Id(), waitTimeout)
	}
	return nil
}

func stompExpectNone(t testing.TB, sub *stomp.Subscription) {
	t.Helper()
	select {
	case m := <-sub.C:
		if m != nil && m.Err == nil {
			t.Fatalf("unexpected message on %s: %q", sub.Id(), m.Body)
		}
	case <-time.After(quietPeriod):
	}
}

// rawSTOMP is a hand-driven STOMP connection for frames no client library would send.
type rawSTOMP struct {
	t  testing.TB
	nc net.Conn
	r  *sframe.Reader
}

func dialRaw(t testing.TB, addr string) *rawSTOMP {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(2 * waitTimeout))
	return &rawSTOMP{t: t, nc: nc, r: sframe.NewReader(bufio.NewReader(nc))}
}

func (c *rawSTOMP) send(s string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame, skipping heart-beats.
func (c *rawSTOMP) read() *sframe.Frame {
	c.t.Helper()
	for {
		f, err := c.r.Read()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if f != nil {
			return f
		}
	}
}

func (c *rawSTOMP) connect(version string) *sframe.Frame {
	c.t.Helper()
	c.send("CONNECT\naccept-version:" + version + "\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
	f := c.read()
	if f.Command != sframe.CONNECTED {
		c.t.Fatalf("CONNECT: got %s %v %q", f.Command, f.Header, f.Body)
	}
	return f
}

// expectError reads an ERROR frame with the given message header and a body containing
// detail, then expects the server to close the connection.
func (c *rawSTOMP) expectError(message, detail string) *sframe.Frame {
	c.t.Helper()
	f := c.read()
	if f.Command != sframe.ERROR {
		c.t.Fatalf("got %s %v %q, want ERROR %q", f.Command, f.Header, f.Body, message)
	}
	if got := f.Header.Get("message"); got != message || !strings.Contains(string(f.Body), detail) {
		c.t.Fatalf("ERROR message %q body %q, want %q containing %q", got, f.Body, message, detail)
	}
	c.expectClosed()
	return f
}

func (c *rawSTOMP) expectClosed() {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(waitTimeout))
	for {
		f, err := c.r.Read()
		if err != nil {
			return
		}
		if f != nil {
			c.t.Fatalf("expected the server to close, got %s %v", f.Command, f.Header)
		}
	}
}

// writeConfig writes a parley configuration file for the test and returns its path.
func writeConfig(t testing.TB, yaml string) string {
	t.Helper()
	p := t.TempDir() + "/parley.yaml"
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
