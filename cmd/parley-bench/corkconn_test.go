package main

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection; the client end is corked.
func tcpPair(t *testing.T) (*corkConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var s net.Conn
	select {
	case s = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("accept timed out")
	}
	if s == nil {
		t.Fatal("accept failed")
	}
	cc := newCorkConn(c)
	t.Cleanup(func() { cc.Close(); s.Close() })
	return cc, s
}

// readNothing reports whether nothing arrives on s within a short wait.
func readNothing(t *testing.T, s net.Conn) bool {
	t.Helper()
	_ = s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var b [1]byte
	n, _ := s.Read(b[:])
	_ = s.SetReadDeadline(time.Time{})
	return n == 0
}

func readN(t *testing.T, s net.Conn, n int) []byte {
	t.Helper()
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(s, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

func TestCorkHoldsUntilFlushInOrder(t *testing.T) {
	cc, s := tcpPair(t)
	if err := cc.hold(func() error {
		_, err := cc.Write([]byte("one,"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !readNothing(t, s) {
		t.Fatal("a held write reached the peer before flush")
	}
	// A write without the cork (a heartbeat, a synchronous method) goes out at once, after
	// what was held.
	if _, err := cc.Write([]byte("two,")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, s, 8); string(got) != "one,two," {
		t.Fatalf("got %q", got)
	}
	_ = cc.hold(func() error { _, err := cc.Write([]byte("three")); return err })
	if err := cc.flush(); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, s, 5); string(got) != "three" {
		t.Fatalf("got %q", got)
	}
}

func TestCorkWritesOutAtItsLimit(t *testing.T) {
	cc, s := tcpPair(t)
	chunk := bytes.Repeat([]byte{'x'}, 1000)
	var want []byte
	for i := 0; len(want) <= corkLimit; i++ {
		chunk[0] = byte('a' + i%26)
		want = append(want, chunk...)
		if err := cc.hold(func() error { _, err := cc.Write(chunk); return err }); err != nil {
			t.Fatal(err)
		}
	}
	// Everything but the last chunk must have gone out without a flush.
	if got := readN(t, s, len(want)-len(chunk)); !bytes.Equal(got, want[:len(want)-len(chunk)]) {
		t.Fatal("bytes out of order before the limit flush")
	}
	if err := cc.flush(); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, s, len(chunk)); !bytes.Equal(got, want[len(want)-len(chunk):]) {
		t.Fatal("last chunk wrong")
	}
}

func TestCorkReadBufferKeepsEveryByte(t *testing.T) {
	cc, s := tcpPair(t)
	want := make([]byte, 300<<10)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() { _, _ = s.Write(want) }()
	_ = cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 0, len(want))
	sizes := []int{7, 4096, 100 << 10, 1}
	for i := 0; len(got) < len(want); i++ {
		p := make([]byte, min(sizes[i%len(sizes)], len(want)-len(got)))
		n, err := cc.Read(p)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		got = append(got, p[:n]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes read through the buffer differ from those written")
	}
}
