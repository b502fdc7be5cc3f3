package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"slices"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func sampleMessages() []*raftpb.Message {
	return []*raftpb.Message{
		{Type: raftpb.MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(7)), Commit: new(uint64(40))},
		{Type: raftpb.MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(7)), Index: new(uint64(41)), LogTerm: new(uint64(7)),
			Entries: []*raftpb.Entry{{Term: new(uint64(7)), Index: new(uint64(42)), Data: []byte("hello")}}},
	}
}

// Frames written by the encoder read back as the same hello and messages, in order.
func TestWireRoundTrip(t *testing.T) {
	msgs := sampleMessages()
	buf := appendHello(nil, hello{node: 3, meta: map[string]string{"amqp": "127.0.0.1:5672", "http": ""}})
	buf, err := appendMessages(buf, 1<<63|99, msgs)
	if err != nil {
		t.Fatal(err)
	}
	buf, err = appendMessages(buf, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(bytes.NewReader(buf))
	kind, body, err := readFrame(r, 1<<20)
	if err != nil || kind != kindHello {
		t.Fatalf("hello frame: kind %d, %v", kind, err)
	}
	h, err := decodeHello(body)
	if err != nil || h.node != 3 || !maps.Equal(h.meta, map[string]string{"amqp": "127.0.0.1:5672", "http": ""}) {
		t.Fatalf("hello: %+v, %v", h, err)
	}
	kind, body, err = readFrame(r, 1<<20)
	if err != nil || kind != kindMessages {
		t.Fatalf("messages frame: kind %d, %v", kind, err)
	}
	group, got, err := decodeMessages(body)
	if err != nil || group != 1<<63|99 || len(got) != len(msgs) {
		t.Fatalf("messages: group %d, %d messages, %v", group, len(got), err)
	}
	for i := range msgs {
		if !proto.Equal(got[i], msgs[i]) {
			t.Fatalf("message %d: got %v, want %v", i, got[i], msgs[i])
		}
	}
	kind, body, err = readFrame(r, 1<<20)
	if err != nil || kind != kindMessages {
		t.Fatalf("empty messages frame: kind %d, %v", kind, err)
	}
	if group, got, err := decodeMessages(body); err != nil || group != 0 || len(got) != 0 {
		t.Fatalf("empty messages: %d %d %v", group, len(got), err)
	}
	if _, _, err := readFrame(r, 1<<20); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

// Corrupt input is refused with ErrBadFrame, never a panic or an allocation sized by a lie.
func TestWireRejects(t *testing.T) {
	good := appendHello(nil, hello{node: 1})
	cases := map[string][]byte{
		"frame over limit":   {0x10, 0, 0, 0, kindMessages},
		"zero length":        {0, 0, 0, 0, 0},
		"wrong magic":        finishFrame(append(appendFrameHeader2(kindHello), "XXXX\x01\x01\x00"...), 0),
		"wrong version":      finishFrame(append(appendFrameHeader2(kindHello), "PRLY\x09\x01\x00"...), 0),
		"node zero":          finishFrame(append(appendFrameHeader2(kindHello), "PRLY\x01\x00\x00"...), 0),
		"huge meta count":    finishFrame(append(appendFrameHeader2(kindHello), "PRLY\x01\x01\xff\xff\xff\xff\x0f"...), 0),
		"trailing bytes":     append(good[:len(good):len(good)], 0),
		"huge message count": finishFrame(append(appendFrameHeader2(kindMessages), 0x01, 0xff, 0xff, 0xff, 0x7f), 0),
		"message too long":   finishFrame(append(appendFrameHeader2(kindMessages), 0x01, 0x01, 0x40, 0x01), 0),
		"not protobuf":       finishFrame(append(appendFrameHeader2(kindMessages), 0x01, 0x01, 0x02, 0xff, 0xff), 0),
	}
	for name, in := range cases {
		if name == "trailing bytes" {
			// Same frame with one more byte inside it.
			in = finishFrame(in, 0)
		}
		err := decodeAll(in, 1<<10)
		if !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: got %v, want ErrBadFrame", name, err)
		}
	}
}

func appendFrameHeader2(kind byte) []byte {
	b, _ := appendFrameHeader(nil, kind)
	return b
}

// decodeAll decodes every frame of in, as a connection's reader would.
func decodeAll(in []byte, limit int) error {
	r := bufio.NewReader(bytes.NewReader(in))
	for {
		kind, body, err := readFrame(r, limit)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch kind {
		case kindHello:
			h, err := decodeHello(body)
			if err != nil {
				return err
			}
			// What decodes re-encodes to the same frame.
			again, err := decodeHello(appendHello(nil, h)[5:])
			if err != nil || again.node != h.node || !maps.Equal(again.meta, h.meta) {
				panic("hello does not round-trip")
			}
		case kindMessages:
			group, msgs, err := decodeMessages(body)
			if err != nil {
				return err
			}
			enc, err := appendMessages(nil, group, msgs)
			if err != nil {
				return err
			}
			g2, m2, err := decodeMessages(enc[5:])
			if err != nil || g2 != group || len(m2) != len(msgs) {
				panic("messages do not round-trip")
			}
		case kindHeartbeats:
			beats, err := decodeHeartbeats(body)
			if err != nil {
				return err
			}
			again, err := decodeHeartbeats(appendHeartbeats(nil, beats)[5:])
			if err != nil || !slices.Equal(again, beats) {
				panic("heartbeats do not round-trip")
			}
		default:
			return ErrBadFrame
		}
	}
}

// FuzzDecodeFrames feeds the peer-connection decoder arbitrary bytes: it must return an error
// or frames that re-encode to themselves, and never panic.
func FuzzDecodeFrames(f *testing.F) {
	seed := appendHello(nil, hello{node: 2, meta: map[string]string{"amqp": "127.0.0.1:5673"}})
	seed, _ = appendMessages(seed, 1<<63|5, sampleMessages())
	seed = appendHeartbeats(seed, sampleBeats())
	f.Add(seed)
	f.Add(appendHello(nil, hello{node: 1}))
	f.Add([]byte{0, 0, 0, 1, kindMessages})
	f.Fuzz(func(t *testing.T, in []byte) {
		_ = decodeAll(in, 1<<16)
	})
}
