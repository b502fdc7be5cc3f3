package mqtt

import (
	"bytes"
	"sync"

	"github.com/mochi-mqtt/server/v2/packets"
)

// outWriter encodes the PUBLISH packets of a session writer's batch into one buffer and writes
// them to the connection together, when the batch is done (or the buffer is full). mochi's
// Client.WritePacket would encode each packet into a buffer of its own, grown as it goes, and
// make one write system call per packet: in a fan-out to ten subscribers that was ten writes
// and about 20 KB of garbage per message published.
//
// Writing around WritePacket keeps what it does for a PUBLISH: the client's protocol version
// and maximum packet size [MQTT-3.1.2-24], response information allowed (as for every packet
// but CONNACK), and problem information not suppressed (bridge.OnPacketEncode clears it for
// every PUBLISH [MQTT-3.1.2-29]; no other hook is installed). The write itself holds the
// client's lock, as WritePacket does, so mochi's own packets (PUBACK, PINGRESP, SUBACK, ...)
// go out whole between two of ours.
type outWriter struct {
	x   *session
	buf *bytes.Buffer // from outBufs while the writer goroutine runs
	// MQTT 5 only: the packet's properties and their encoding (see encodePublish).
	pr    packets.Properties
	props bytes.Buffer
}

// outFlushAt is the buffered size at which a batch is written before it ends.
const outFlushAt = 64 << 10

// outBufs keeps writer buffers between batches of all sessions, so an idle session holds none.
var outBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func newOutWriter(x *session) *outWriter {
	return &outWriter{x: x, buf: outBufs.Get().(*bytes.Buffer)}
}

// add encodes pk behind the packets already buffered. A packet over the client's maximum
// packet size is not written and gives packets.ErrPacketTooLarge.
func (w *outWriter) add(pk packets.Packet) error {
	cl := w.x.cl
	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	pk.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	pk.Mods.AllowResponseInfo = true
	pk.Mods.DisallowProblemInfo = false
	start := w.buf.Len()
	if err := w.encodePublish(&pk); err != nil {
		w.buf.Truncate(start)
		return err
	}
	if pk.Mods.MaxSize > 0 && uint32(w.buf.Len()-start) > pk.Mods.MaxSize {
		w.buf.Truncate(start)
		return packets.ErrPacketTooLarge // [MQTT-3.1.2-25]
	}
	if w.buf.Len() >= outFlushAt {
		w.flush()
	}
	return nil
}

// encodePublish appends pk to the buffer as mochi's PublishEncode writes it [MQTT-3.3], without
// its allocations per packet (a slice for the topic, one for the packet identifier, a pooled
// buffer for the rest). Properties (MQTT 5) are still mochi's own encoding.
func (w *outWriter) encodePublish(pk *packets.Packet) error {
	fh := &pk.FixedHeader
	if fh.Qos > 0 && pk.PacketID == 0 {
		return packets.ErrProtocolViolationNoPacketID // [MQTT-2.2.1-2]
	}
	n := 2 + len(pk.TopicName) // [MQTT-3.3.2-1]
	if fh.Qos > 0 {
		n += 2
	}
	var props []byte
	if pk.ProtocolVersion == 5 {
		// Encode on a copy held by the writer: a pointer to pk itself would make the caller's
		// Packet escape to the heap on every call, MQTT 5 or not.
		w.pr = pk.Properties
		w.props.Reset()
		w.pr.Encode(packets.Publish, pk.Mods, &w.props, n+len(pk.Payload))
		props = w.props.Bytes()
		w.pr = packets.Properties{}
	}
	remaining := n + len(props) + len(pk.Payload)
	b := w.buf
	b.Grow(1 + 4 + remaining)
	b.WriteByte(packets.Publish<<4 | bit(fh.Dup)<<3 | fh.Qos<<1 | bit(fh.Retain))
	for { // Variable Byte Integer [MQTT-1.5.5]
		c := byte(remaining % 128)
		remaining /= 128
		if remaining > 0 {
			c |= 0x80
		}
		b.WriteByte(c)
		if remaining == 0 {
			break
		}
	}
	b.WriteByte(byte(len(pk.TopicName) >> 8))
	b.WriteByte(byte(len(pk.TopicName)))
	b.WriteString(pk.TopicName)
	if fh.Qos > 0 {
		b.WriteByte(byte(pk.PacketID >> 8))
		b.WriteByte(byte(pk.PacketID))
	}
	b.Write(props)
	b.Write(pk.Payload)
	return nil
}

func bit(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// flush writes what is buffered. A failed write is the connection's end, which the
// connection's reader sees and handles; what was in flight goes back to the queue when the
// session closes.
func (w *outWriter) flush() {
	if w.buf.Len() == 0 {
		return
	}
	cl := w.x.cl
	cl.Lock()
	if !cl.Closed() {
		if g, ok := cl.Net.Conn.(*guardConn); ok {
			_, _ = g.writeNow(w.buf.Bytes())
		} else {
			_, _ = cl.Net.Conn.Write(w.buf.Bytes())
		}
	}
	cl.Unlock()
	w.buf.Reset()
}

// release flushes and gives the buffer back; the writer goroutine is ending.
func (w *outWriter) release() {
	w.flush()
	if w.buf.Cap() <= 4*outFlushAt {
		outBufs.Put(w.buf)
	}
	w.buf = nil
}
