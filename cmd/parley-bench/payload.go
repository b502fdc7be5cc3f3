package main

import (
	"encoding/binary"
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
const headerLen = 24

var magic = [4]byte{'P', 'B', 'v', '1'}

var errForeignBody = errors.New("body is not a parley-bench message")

// newBody returns a body of size bytes (at least headerLen) with a deterministic filler.
func newBody(size int) []byte {
	b := make([]byte, max(size, headerLen))
	for i := headerLen; i < len(b); i++ {
		b[i] = byte('a' + i%26)
	}
	copy(b, magic[:])
	return b
}

// stamp writes the accounting header into body in place.
func stamp(body []byte, producer uint32, seq uint64, sentNanos int64) {
	binary.BigEndian.PutUint32(body[4:8], producer)
	binary.BigEndian.PutUint64(body[8:16], seq)
	binary.BigEndian.PutUint64(body[16:24], uint64(sentNanos))
}

// parseHeader reads the accounting header back.
func parseHeader(body []byte) (producer uint32, seq uint64, sentNanos int64, err error) {
	if len(body) < headerLen || [4]byte(body[0:4]) != magic {
		return 0, 0, 0, errForeignBody
	}
	return binary.BigEndian.Uint32(body[4:8]), binary.BigEndian.Uint64(body[8:16]),
		int64(binary.BigEndian.Uint64(body[16:24])), nil
}
