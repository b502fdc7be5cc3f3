package mqtt

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// errMalformed reports bytes that are not a well-formed MQTT packet.
var errMalformed = errors.New("mqtt: malformed packet")

// guardConn frames the client's byte stream into packets before mochi decodes them, and
// refuses the few malformed packets mochi's decoders would panic on (a SUBSCRIBE of MQTT 5
// whose last filter has no options byte indexes past the packet). A refused packet is a read
// error: mochi ends that connection, as for any other malformed packet. The packet size limit
// is checked here as well, before anything is allocated for the packet.
type guardConn struct {
	net.Conn
	br      *bufio.Reader
	pending []byte // the current packet, handed to mochi as it reads
	version byte   // from CONNECT
	max     uint32
	err     error
	// tooLarge, when set, is called (on the reader goroutine) before an over-size packet ends
	// the connection, so an MQTT 5 client is told why with DISCONNECT 0x95.
	tooLarge func()
}

func newGuardConn(c net.Conn, maxPacket uint32) *guardConn {
	return &guardConn{Conn: c, br: bufio.NewReaderSize(c, 4096), max: maxPacket}
}

func (g *guardConn) Read(p []byte) (int, error) {
	if len(g.pending) == 0 {
		if g.err != nil {
			return 0, g.err
		}
		if err := g.next(); err != nil {
			g.err = err
			if len(g.pending) == 0 {
				return 0, err
			}
		}
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	return n, nil
}

// next reads one whole packet into pending. On a malformed packet it returns the error and
// passes on nothing of that packet.
func (g *guardConn) next() error {
	first, err := g.br.ReadByte()
	if err != nil {
		return err
	}
	hdr := []byte{first}
	var remaining uint32
	for i := 0; ; i++ {
		b, err := g.br.ReadByte()
		if err != nil {
			return err
		}
		hdr = append(hdr, b)
		remaining |= uint32(b&0x7F) << (7 * i)
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return fmt.Errorf("%w: remaining length over four bytes", errMalformed)
		}
	}
	if g.max > 0 && uint64(remaining)+uint64(len(hdr)) > uint64(g.max) {
		if g.tooLarge != nil && g.version == 5 {
			g.tooLarge() // [MQTT-3.1.2-24] [MQTT-4.13.1-1]
		}
		return fmt.Errorf("%w: packet of %d bytes over the maximum packet size", errMalformed, uint64(remaining)+uint64(len(hdr)))
	}
	pk := make([]byte, len(hdr)+int(remaining))
	copy(pk, hdr)
	if _, err := io.ReadFull(g.br, pk[len(hdr):]); err != nil {
		return err
	}
	body := pk[len(hdr):]
	switch first >> 4 {
	case 1: // CONNECT: protocol name, then the level
		if len(body) >= 2 {
			n := int(binary.BigEndian.Uint16(body))
			if len(body) > 2+n {
				g.version = body[2+n]
			}
		}
	case 8: // SUBSCRIBE
		if g.version == 5 && !wellFormedSubscribe5(body) {
			return fmt.Errorf("%w: SUBSCRIBE", errMalformed)
		}
	}
	g.pending = pk
	return nil
}

// wellFormedSubscribe5 checks an MQTT 5 SUBSCRIBE body: packet id, properties, then filters
// each followed by its options byte [MQTT-3.8.3].
func wellFormedSubscribe5(b []byte) bool {
	if len(b) < 2 {
		return false
	}
	b = b[2:]
	n, used := binary.Uvarint(b)
	if used <= 0 || used > 4 || uint64(len(b)-used) < n {
		return false
	}
	b = b[used+int(n):]
	for len(b) > 0 {
		if len(b) < 2 {
			return false
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l+1 {
			return false
		}
		b = b[2+l+1:]
	}
	return true
}
