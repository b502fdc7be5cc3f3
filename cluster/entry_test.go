package cluster

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"
)

func TestEntryHeaderRoundTrip(t *testing.T) {
	for _, data := range [][]byte{nil, {}, []byte("k=v"), bytes.Repeat([]byte{0xff}, 1000)} {
		b := encodeEntry(3, 1<<62+5, data)
		node, seq, got, ok := decodeEntry(b)
		if !ok || node != 3 || seq != 1<<62+5 || !bytes.Equal(got, data) {
			t.Fatalf("decode(encode(%q)) = %d %d %q %v", data, node, seq, got, ok)
		}
	}
	// Data not written by a host: a leader's empty entry, foreign bytes.
	for _, b := range [][]byte{nil, {entryTagProposal}, []byte("short"), append([]byte{0x7f}, make([]byte, 20)...)} {
		if _, _, _, ok := decodeEntry(b); ok {
			t.Fatalf("decodeEntry(%q) accepted", b)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(encodeEntry(1, 2, []byte("k=v")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		node, seq, data, ok := decodeEntry(b)
		if ok && !bytes.Equal(encodeEntry(node, seq, data), b) {
			t.Fatalf("decode then encode changed %q", b)
		}
	})
}

func TestRaftLoggerPanics(t *testing.T) {
	l := newRaftLogger(zap.NewNop())
	for name, fn := range map[string]func(){
		"Panicf": func() { l.Panicf("broken %d", 1) },
		"Fatalf": func() { l.Fatalf("broken %d", 2) },
		"Panic":  func() { l.Panic("broken") },
		"Fatal":  func() { l.Fatal("broken") },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			fn()
		}()
	}
	l.Infof("quiet %d", 1) // goes to Debug: no output, no panic
}

func TestAddGroupCanceledContext(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{}, eng)
	defer h.Stop()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := h.AddGroup(canceled, 1, newKV()); !errors.Is(err, context.Canceled) {
		t.Fatalf("AddGroup with a canceled context: %v", err)
	}
	// Nothing was left reserved.
	addGroup(t, ctx, h, 1, newKV())
	if _, err := h.AddGroup(ctx, 2, nil); err == nil {
		t.Fatal("AddGroup with a nil state machine succeeded")
	}
}
