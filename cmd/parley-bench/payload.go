package main

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
)

// Every body starts with a fixed header so the consumer can account for the message and time
// it without any broker-side properties (which brokers may rewrite or drop):
//
//	0..3   magic "PBv1" — rejects foreign messages that happen to sit in the queue
//	4..7   producer id, big-endian uint32
//	8..15  sequence number within that producer, big-endian uint64, dense from 0
//	16..23 send time, nanoseconds since the run's monotonic epoch, big-endian int64
//
// The rest of the body is filler up to -size.
//
// Bodies that must be UTF-8 text (STOMP over WebSocket: one frame per text message, and
// RabbitMQ's Web-STOMP closes a connection that sends invalid UTF-8 in one) use the same
// fields as hex digits after the magic "PBt1": 4 + 8 + 16 + 16 = 44 bytes. The filler is
// ASCII either way.
const (
	headerLen     = 24
	textHeaderLen = 44
)

var (
	magic     = [4]byte{'P', 'B', 'v', '1'}
	textMagic = [4]byte{'P', 'B', 't', '1'}
)

var errForeignBody = errors.New("body is not a parley-bench message")

// newBody returns a body of size bytes (at least the header) with a deterministic filler.
func newBody(size int, text bool) []byte {
	n, m := headerLen, magic
	if text {
		n, m = textHeaderLen, textMagic
	}
	b := make([]byte, max(size, n))
	for i := n; i < len(b); i++ {
		b[i] = byte('a' + i%26)
	}
	copy(b, m[:])
	return b
}

// stamp writes the accounting header into body in place, in the format newBody chose.
func stamp(body []byte, producer uint32, seq uint64, sentNanos int64) {
	if [4]byte(body[0:4]) == textMagic {
		var raw [20]byte
		binary.BigEndian.PutUint32(raw[0:4], producer)
		binary.BigEndian.PutUint64(raw[4:12], seq)
		binary.BigEndian.PutUint64(raw[12:20], uint64(sentNanos))
		hex.Encode(body[4:textHeaderLen], raw[:])
		return
	}
	binary.BigEndian.PutUint32(body[4:8], producer)
	binary.BigEndian.PutUint64(body[8:16], seq)
	binary.BigEndian.PutUint64(body[16:24], uint64(sentNanos))
}

// parseHeader reads the accounting header back, in either format.
func parseHeader(body []byte) (producer uint32, seq uint64, sentNanos int64, err error) {
	if len(body) >= textHeaderLen && [4]byte(body[0:4]) == textMagic {
		var raw [20]byte
		if _, err := hex.Decode(raw[:], body[4:textHeaderLen]); err != nil {
			return 0, 0, 0, errForeignBody
		}
		return binary.BigEndian.Uint32(raw[0:4]), binary.BigEndian.Uint64(raw[4:12]),
			int64(binary.BigEndian.Uint64(raw[12:20])), nil
	}
	if len(body) < headerLen || [4]byte(body[0:4]) != magic {
		return 0, 0, 0, errForeignBody
	}
	return binary.BigEndian.Uint32(body[4:8]), binary.BigEndian.Uint64(body[8:16]),
		int64(binary.BigEndian.Uint64(body[16:24])), nil
}
