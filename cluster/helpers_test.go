package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/parleymq/parley/storage"
)

// testTimeout bounds every wait of a test; nothing asserts a duration.
const testTimeout = 60 * time.Second

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t testing.TB) *zap.Logger {
	if tt, ok := t.(*testing.T); ok {
		level := zap.WarnLevel
		// PARLEY_TEST_LOG=info (or debug) shows more of a failing test's story.
		if l, err := zap.ParseAtomicLevel(os.Getenv("PARLEY_TEST_LOG")); err == nil && os.Getenv("PARLEY_TEST_LOG") != "" {
			level = l.Level()
		}
		return zaptest.NewLogger(tt, zaptest.Level(level))
	}
	return zap.NewNop()
}

func storageOptions(fs vfs.FS) storage.Options {
	return storage.Options{
		FS:                fs,
		MemTableSize:      1 << 20,
		CacheSize:         1 << 20,
		DiskCheckInterval: -1,
	}
}

func openEngine(t testing.TB, dir string, fs vfs.FS) *storage.Engine {
	t.Helper()
	eng, err := storage.Open(dir, storageOptions(fs), testLogger(t))
	if err != nil {
		t.Fatalf("storage.Open(%s): %v", dir, err)
	}
	return eng
}

// startHost starts a host over eng; the caller stops it (it is also stopped
// at cleanup, which is harmless after Stop).
func startHost(t testing.TB, cfg Config, eng *storage.Engine) *Host {
	t.Helper()
	if cfg.NodeID == 0 {
		cfg.NodeID = 1
	}
	h, err := NewHost(cfg, eng, testLogger(t))
	if err != nil {
		t.Fatalf("NewHost: %v", err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(h.Stop)
	return h
}

func addGroup(t testing.TB, ctx context.Context, h *Host, id uint64, sm StateMachine) *Group {
	t.Helper()
	g, err := h.AddGroup(ctx, id, sm)
	if err != nil {
		t.Fatalf("AddGroup(%d): %v", id, err)
	}
	return g
}

// kv is a test state machine: "key=value" sets key and returns the number
// of entries applied so far, so results show order and exactly-once apply.
type kv struct {
	mu      sync.Mutex
	Data    map[string]string
	Count   uint64
	Applied uint64
}

func newKV() *kv { return &kv{Data: make(map[string]string)} }

func (s *kv) Apply(index uint64, data []byte) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if index <= s.Applied {
		panic(fmt.Sprintf("kv: apply %d after %d", index, s.Applied))
	}
	s.Applied = index
	k, v, ok := strings.Cut(string(data), "=")
	if !ok {
		return fmt.Errorf("kv: bad command %q", data)
	}
	s.Data[k] = v
	s.Count++
	return s.Count
}

func (s *kv) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.Marshal(s)
}

func (s *kv) Restore(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := &kv{}
	if err := json.Unmarshal(data, n); err != nil {
		return err
	}
	s.Data, s.Count, s.Applied = n.Data, n.Count, n.Applied
	if s.Data == nil {
		s.Data = make(map[string]string)
	}
	return nil
}

func (s *kv) state() (map[string]string, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.Data), s.Count
}

func (s *kv) get(k string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.Data[k]
	return v, ok
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
