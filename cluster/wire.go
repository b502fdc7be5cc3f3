package cluster

// The peer wire format: what one node writes to another on the cluster port.
//
// A connection carries frames; every frame is
//
//	length  uint32, big-endian: the bytes after it (kind and body), at most the reader's limit
//	kind    byte
//	body    length-1 bytes
//
// kindHello opens every connection, in both directions, before anything else:
//
//	magic   "PRLY"
//	version byte (wireVersion)
//	node    uvarint, the sender's raft id (never 0)
//	count   uvarint, then count pairs of (uvarint length, bytes) key, (uvarint length, bytes)
//	        value: what the node advertises to its peers (its client listener addresses)
//
// kindPing has an empty body. Each side sends one when it has written nothing else for a
// ping interval, so a peer that goes silent (a dead node, a partition that drops packets) is
// noticed by its read deadline even while every group between the two is quiesced: liveness is
// per node (quiesce.go).
//
// kindMessages carries raft messages of one group:
//
//	group   uvarint
//	count   uvarint, then count times (uvarint length, bytes) a raftpb.Message in protobuf
//
// kindRPC carries one message of the RPC channel (rpc.go) beside the raft messages: its body is
// opaque to the transport. A node sends it only to a peer whose hello advertised metaRPC, so
// the wire version stays 2: a peer that predates the channel never receives one, and its hello
// (without metaRPC) stays readable.
//
// kindHeartbeats carries the heartbeats and heartbeat responses of many groups from the sender
// to the receiver, coalesced into one list (the body is described in heartbeat.go). Likewise,
// a node sends it only to a peer whose hello advertised metaBeats; an older peer gets the
// heartbeats one by one.
//
// Every count and length is checked against what is left of the frame before anything is
// allocated, so a hostile or corrupt peer costs at most one frame of the reader's limit.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

const (
	kindHello    byte = 1
	kindMessages byte = 2
	kindPing     byte = 3
	kindRPC      byte = 4
	// kindHeartbeats: see heartbeat.go.
	kindHeartbeats byte = 5

	wireMagic = "PRLY"
	// wireVersion 2 added kindPing (a version-1 peer would drop the connection on it).
	wireVersion = 2

	// DefaultMaxFrame bounds one frame a peer may send: a raft append is bounded by
	// MaxSizePerMsg, but a snapshot carries a whole queue's live messages.
	DefaultMaxFrame = 512 << 20
)

// ErrBadFrame reports bytes from a peer that are not a valid frame.
var ErrBadFrame = errors.New("cluster: bad frame from peer")

// hello is what a node says first on every connection.
type hello struct {
	node uint64
	meta map[string]string
}

// appendFrameHeader reserves the 5-byte header; finishFrame fills in the length.
func appendFrameHeader(buf []byte, kind byte) ([]byte, int) {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0, kind)
	return buf, start
}

func finishFrame(buf []byte, start int) []byte {
	binary.BigEndian.PutUint32(buf[start:], uint32(len(buf)-start-4))
	return buf
}

func appendBytes(buf, b []byte) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(b)))
	return append(buf, b...)
}

// appendHello appends a hello frame.
func appendHello(buf []byte, h hello) []byte {
	buf, start := appendFrameHeader(buf, kindHello)
	buf = append(buf, wireMagic...)
	buf = append(buf, wireVersion)
	buf = binary.AppendUvarint(buf, h.node)
	buf = binary.AppendUvarint(buf, uint64(len(h.meta)))
	for _, k := range slices.Sorted(maps.Keys(h.meta)) {
		buf = appendBytes(buf, []byte(k))
		buf = appendBytes(buf, []byte(h.meta[k]))
	}
	return finishFrame(buf, start)
}

// appendPing appends a ping frame.
func appendPing(buf []byte) []byte {
	buf, start := appendFrameHeader(buf, kindPing)
	return finishFrame(buf, start)
}

// appendMessages appends one frame with msgs of group.
func appendMessages(buf []byte, group uint64, msgs []*raftpb.Message) ([]byte, error) {
	buf, start := appendFrameHeader(buf, kindMessages)
	buf = binary.AppendUvarint(buf, group)
	buf = binary.AppendUvarint(buf, uint64(len(msgs)))
	opts := proto.MarshalOptions{}
	for _, m := range msgs {
		size := opts.Size(m)
		buf = binary.AppendUvarint(buf, uint64(size))
		var err error
		if buf, err = opts.MarshalAppend(buf, m); err != nil {
			return nil, fmt.Errorf("marshal raft message: %w", err)
		}
	}
	if len(buf)-start-4 > 0xFFFFFFFF {
		return nil, fmt.Errorf("raft messages of group %d: frame too large", group)
	}
	return finishFrame(buf, start), nil
}

// appendRPC appends one frame with an RPC channel message.
func appendRPC(buf, payload []byte) ([]byte, error) {
	if len(payload)+1 > 0xFFFFFFFF {
		return nil, errors.New("rpc message: frame too large")
	}
	buf, start := appendFrameHeader(buf, kindRPC)
	buf = append(buf, payload...)
	return finishFrame(buf, start), nil
}

// readFrame reads one frame. The body is freshly allocated (decoded messages keep pointing
// into it). A body longer than limit is an error before it is read.
func readFrame(r *bufio.Reader, limit int) (kind byte, body []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n == 0 || uint64(n) > uint64(limit) {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes (limit %d)", ErrBadFrame, n, limit)
	}
	body = make([]byte, n-1)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[4], body, nil
}

// wireReader walks a frame body.
type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: bad varint", ErrBadFrame)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: length %d beyond the frame", ErrBadFrame, n)
		return nil
	}
	b := r.b[:n:n]
	r.b = r.b[n:]
	return b
}

// count reads a count of items each at least minSize bytes long, refusing one the rest of the
// frame cannot hold, so it never sizes an allocation from a lie.
func (r *wireReader) count(minSize int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/minSize) {
		r.err = fmt.Errorf("%w: count %d beyond the frame", ErrBadFrame, n)
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}

func decodeHello(body []byte) (hello, error) {
	if len(body) < len(wireMagic)+1 || string(body[:len(wireMagic)]) != wireMagic {
		return hello{}, fmt.Errorf("%w: not a parley cluster peer", ErrBadFrame)
	}
	if v := body[len(wireMagic)]; v != wireVersion {
		return hello{}, fmt.Errorf("%w: wire version %d, want %d", ErrBadFrame, v, wireVersion)
	}
	r := wireReader{b: body[len(wireMagic)+1:]}
	h := hello{node: r.uvarint()}
	n := r.count(2)
	if n > 0 {
		h.meta = make(map[string]string, n)
	}
	for range n {
		k, v := r.bytes(), r.bytes()
		if r.err != nil {
			break
		}
		h.meta[string(k)] = string(v)
	}
	if r.err == nil && h.node == 0 {
		r.err = fmt.Errorf("%w: node id 0", ErrBadFrame)
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%w: %d bytes after hello", ErrBadFrame, len(r.b))
	}
	if r.err != nil {
		return hello{}, r.err
	}
	return h, nil
}

func decodeMessages(body []byte) (uint64, []*raftpb.Message, error) {
	r := wireReader{b: body}
	group := r.uvarint()
	n := r.count(1)
	msgs := make([]*raftpb.Message, 0, n)
	for range n {
		b := r.bytes()
		if r.err != nil {
			break
		}
		m := &raftpb.Message{}
		if err := proto.Unmarshal(b, m); err != nil {
			return 0, nil, fmt.Errorf("%w: raft message: %v", ErrBadFrame, err)
		}
		msgs = append(msgs, m)
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%w: %d bytes after messages", ErrBadFrame, len(r.b))
	}
	if r.err != nil {
		return 0, nil, r.err
	}
	return group, msgs, nil
}
