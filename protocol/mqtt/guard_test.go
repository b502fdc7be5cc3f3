package mqtt

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
)

// The MQTT 5 SUBSCRIBE shapes mochi's decoder mis-handles are refused before it sees them.
func TestWellFormedSubscribe5(t *testing.T) {
	for _, c := range []struct {
		name string
		body []byte
		want bool
	}{
		{"one filter", []byte{0, 1, 0, 0, 1, 'a', 1}, true},
		{"two filters", []byte{0, 1, 0, 0, 1, 'a', 1, 0, 1, 'b', 2}, true},
		{"with properties", []byte{0, 1, 2, 11, 5, 0, 1, 'a', 0}, true},
		{"options byte missing (mochi indexes past the end)", []byte{0, 1, 0, 0, 1, 'a'}, false},
		{"filter cut short", []byte{0, 1, 0, 0, 5, 'a'}, false},
		{"properties longer than the packet", []byte{0, 1, 9, 11}, false},
		{"no packet id", []byte{0}, false},
	} {
		if got := wellFormedSubscribe5(c.body); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// chunkConn serves a byte stream in reads of the given sizes, cycling through them.
type chunkConn struct {
	net.Conn
	data  []byte
	sizes []int
	i     int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(c.sizes[c.i%len(c.sizes)], len(p), len(c.data))
	c.i++
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// packetBytes builds a packet of the given type with a body of n bytes (values i%251).
func packetBytes(typ byte, n int) []byte {
	out := []byte{typ << 4}
	for l := n; ; {
		b := byte(l & 0x7F)
		l >>= 7
		if l > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if l == 0 {
			break
		}
	}
	for i := range n {
		out = append(out, byte(i%251))
	}
	return out
}

// Whatever sizes the socket's reads come in, and whatever sizes the reader asks for, the
// guard passes on the packets byte for byte, and gives its pooled buffer back once idle.
func TestGuardConnFraming(t *testing.T) {
	var stream []byte
	for _, n := range []int{0, 2, 30, 61, 62, 63, 64, 100, 1024, 4095, 4096, 4097, 20000, 65535, 65536, 300000, 2, 0, 5} {
		pk := packetBytes(3, n)
		stream = append(stream, pk...)
	}
	for _, sizes := range [][]int{{1}, {7}, {64}, {4096}, {1 << 20}, {3, 64, 5000, 1, 4096}} {
		for _, ask := range []int{16, 1000, 1 << 16} {
			g := newGuardConn(&chunkConn{data: stream, sizes: sizes}, 0)
			var got []byte
			buf := make([]byte, ask)
			for {
				n, err := g.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatalf("sizes %v ask %d: %v", sizes, ask, err)
					}
					break
				}
			}
			if !bytes.Equal(got, stream) {
				t.Fatalf("sizes %v ask %d: %d bytes out, want %d, or different bytes", sizes, ask, len(got), len(stream))
			}
			if g.pooled != nil {
				t.Fatalf("sizes %v ask %d: pooled buffer still held at the end", sizes, ask)
			}
		}
	}
}

// A packet over the maximum size is refused before its body is read.
func TestGuardConnMaxPacket(t *testing.T) {
	g := newGuardConn(&chunkConn{data: packetBytes(3, 300), sizes: []int{4096}}, 100)
	if _, err := g.Read(make([]byte, 16)); !errors.Is(err, errMalformed) {
		t.Fatalf("got %v, want errMalformed", err)
	}
}

// FuzzGuardConn: whatever the bytes and however the socket splits them, the guard never
// panics, never hands on more bytes than it read, and what it hands on is a prefix of the
// input made of whole packets (it refuses, with an error, what it does not pass on).
func FuzzGuardConn(f *testing.F) {
	f.Add(append(packetBytes(3, 10), packetBytes(4, 2)...), uint8(7), uint32(0))
	f.Add(packetBytes(3, 5000), uint8(64), uint32(0))
	f.Add(packetBytes(3, 300), uint8(1), uint32(100))
	f.Add([]byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, uint8(3), uint32(0))
	f.Add([]byte{0x82, 0x03, 0x00, 0x01, 0x00}, uint8(2), uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8, max uint32) {
		sizes := []int{int(chunk%97) + 1, int(chunk%13) + 1, 4096}
		// 64 B to 1 MiB: the server's limit is never 0 (Config defaults it to 16 MiB).
		g := newGuardConn(&chunkConn{data: data, sizes: sizes}, 64+max%(1<<20))
		var got []byte
		buf := make([]byte, 16+int(chunk))
		for range len(data) + 16 {
			n, err := g.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if len(got) > len(data) || !bytes.Equal(got, data[:len(got)]) {
			t.Fatalf("handed on %d bytes that are not a prefix of the %d read", len(got), len(data))
		}
		// What was handed on splits into whole packets.
		for rest := got; len(rest) > 0; {
			n, used := 0, 1
			for i := 0; ; i++ {
				if used >= len(rest) || i == 4 {
					t.Fatalf("handed on a partial packet header: % x", rest)
				}
				c := rest[used]
				used++
				n |= int(c&0x7F) << (7 * i)
				if c&0x80 == 0 {
					break
				}
			}
			if used+n > len(rest) {
				t.Fatalf("handed on a partial packet: %d of %d bytes", len(rest)-used, n)
			}
			rest = rest[used+n:]
		}
	})
}

// A client that declares a large packet and sends little of it costs the first allocation
// step, not the declared size.
func TestGuardConnDeclaredSizeNotAllocated(t *testing.T) {
	declared := packetBytes(3, 8<<20)[:64] // an 8 MiB PUBLISH, 60-odd bytes of it sent
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	g := newGuardConn(&chunkConn{data: declared, sizes: []int{4096}}, 16<<20)
	if _, err := g.Read(make([]byte, 16)); err == nil {
		t.Fatal("a cut packet was handed on")
	}
	runtime.ReadMemStats(&ms)
	if got := ms.TotalAlloc - before; got > 4*packetAllocStep {
		t.Fatalf("%d bytes allocated for a packet of which 64 bytes came", got)
	}
}
