package framewriter

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// recorder is the peer's end of a socket: it records each read separately.
type recorder struct {
	mu    sync.Mutex
	reads [][]byte
	got   chan struct{}
}

func record(t *testing.T, c net.Conn) *recorder {
	r := &recorder{got: make(chan struct{}, 1024)}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				r.mu.Lock()
				r.reads = append(r.reads, bytes.Clone(buf[:n]))
				r.mu.Unlock()
				r.got <- struct{}{}
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

func (r *recorder) all() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Join(r.reads, nil)
}

func (r *recorder) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for string(r.all()) != want {
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("peer read %q, want %q", r.all(), want)
		}
	}
}

func appendFrame(w *Writer, s string) {
	b := w.Lock()
	w.Unlock(append(b, s...))
}

// Frames appended reach the peer in order; what is pending at Close is still written.
func TestWritesInOrderAndDrainsOnClose(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	r := record(t, b)
	w := New(a, Options{})
	go w.Run()
	for _, s := range []string{"one ", "two ", "three "} {
		appendFrame(w, s)
	}
	appendFrame(w, "four")
	w.Close()
	appendFrame(w, " dropped")
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("writer did not stop after Close")
	}
	r.waitFor(t, "one two three four")
	if w.Err() != nil {
		t.Fatal(w.Err())
	}
}

// Framed mode writes each frame with its own call; an Unlock with nothing appended writes
// nothing (no empty WebSocket message).
func TestFramedWritesOneFramePerCall(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	r := record(t, b)
	w := New(a, Options{Framed: true})
	// Append before the goroutine runs, so all three are pending together.
	appendFrame(w, "A1")
	w.Unlock(w.Lock())
	appendFrame(w, "B22")
	appendFrame(w, "C333")
	go w.Run()
	r.waitFor(t, "A1B22C333")
	w.Close()
	<-w.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	want := []string{"A1", "B22", "C333"}
	if len(r.reads) != len(want) {
		t.Fatalf("reads %q, want one per frame %q", r.reads, want)
	}
	for i := range want {
		if string(r.reads[i]) != want[i] {
			t.Fatalf("read %d = %q, want %q", i, r.reads[i], want[i])
		}
	}
}

// Write silence longer than the heartbeat's silence brings heartbeat frames.
func TestHeartbeatDuringSilence(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	r := record(t, b)
	w := New(a, Options{Heartbeat: func(b []byte) []byte { return append(b, '\n') }})
	go w.Run()
	defer func() { w.Close(); <-w.Done() }()
	w.SetHeartbeat(5*time.Millisecond, 10*time.Millisecond)
	r.waitFor(t, "\n\n\n")
}

// BeforeFlush runs before a write and may append what the write then carries.
func TestBeforeFlushAppendsToTheSameWrite(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	r := record(t, b)
	var w *Writer
	var once sync.Once
	w = New(a, Options{BeforeFlush: func() {
		once.Do(func() { appendFrame(w, "+ack") })
	}})
	appendFrame(w, "frame")
	go w.Run()
	r.waitFor(t, "frame+ack")
	w.Close()
	<-w.Done()
}

// Unwritten output above HighWater reports Overloaded; once written, OnDrain runs.
func TestOverloadedUntilDrained(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	drained := make(chan struct{}, 1)
	w := New(a, Options{OnDrain: func() { drained <- struct{}{} }})
	appendFrame(w, string(make([]byte, HighWater+1)))
	if !w.Overloaded() {
		t.Fatal("not overloaded with more than HighWater pending")
	}
	go w.Run()
	go func() { _, _ = io.Copy(io.Discard, b) }()
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("OnDrain did not run")
	}
	if w.Overloaded() {
		t.Fatal("still overloaded after the write")
	}
	w.Close()
	<-w.Done()
}

// A failed write records the error and closes the socket, so the reader side notices.
func TestWriteErrorClosesTheSocket(t *testing.T) {
	a, b := net.Pipe()
	b.Close()
	w := New(a, Options{})
	go w.Run()
	appendFrame(w, "x")
	w.Close()
	<-w.Done()
	if w.Err() == nil {
		t.Fatal("no error from a write to a closed peer")
	}
	if _, err := a.Read(make([]byte, 1)); err == nil {
		t.Fatal("socket still open after a failed write")
	}
}

// After a burst that grew the buffers past keepSpare, an idle writer gives them back.
func TestIdleWriterGivesBackABurstsBuffers(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	w := New(a, Options{})
	go w.Run()
	go func() { _, _ = io.Copy(io.Discard, b) }()
	frame := string(make([]byte, 64<<10))
	for range 2 * keepSpare / len(frame) * 4 {
		appendFrame(w, frame)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		n, c := len(w.buf), cap(w.buf)
		w.mu.Unlock()
		if n == 0 && c <= keepSpare && w.pending.Load() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle writer still holds a buffer of len %d cap %d (keepSpare %d)", n, c, keepSpare)
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.Close()
	<-w.Done()
}

// A writer under a flood that lasts longer than releaseAfter keeps its buffers: giving them
// back at every period while writes above keepSpare went on made each period grow new ones
// from nothing (docs/performance.md, brief E). The peer reads slowly, so every write takes
// about HighWater; the buffer handed out for appending must never be a fresh one once the
// flood is under way.
func TestFloodedWriterKeepsItsBuffers(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	w := New(a, Options{})
	go w.Run()
	defer func() {
		w.Close()
		_ = a.Close()
		<-w.Done()
	}()
	go func() {
		buf := make([]byte, 256<<10)
		for {
			if _, err := b.Read(buf); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	frame := string(make([]byte, 64<<10))
	warm := time.Now().Add(releaseAfter / 2)
	end := time.Now().Add(releaseAfter*5/2 + releaseAfter/2)
	smallest := -1
	for time.Now().Before(end) {
		if w.Overloaded() {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		buf := w.Lock()
		if time.Now().After(warm) && (smallest < 0 || cap(buf) < smallest) {
			smallest = cap(buf)
		}
		w.Unlock(append(buf, frame...))
	}
	if smallest <= keepSpare {
		t.Fatalf("a flooded writer handed out a buffer of capacity %d (keepSpare %d): it gave its buffers back mid-flood", smallest, keepSpare)
	}
}

// BenchmarkFlood appends 1 KB frames as fast as HighWater allows to a writer whose peer reads
// over loopback TCP, as a flooded consumer connection does: B/op and allocs/op are the writer's
// buffer churn per frame.
func BenchmarkFlood(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(io.Discard, c)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	drained := make(chan struct{}, 1)
	w := New(c, Options{OnDrain: func() {
		select {
		case drained <- struct{}{}:
		default:
		}
	}})
	go w.Run()
	frame := make([]byte, 1024)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for w.Overloaded() {
			select {
			case <-drained:
			case <-time.After(time.Millisecond):
			}
		}
		buf := w.Lock()
		w.Unlock(append(buf, frame...))
	}
	b.StopTimer()
	w.Close()
	<-w.Done()
}
