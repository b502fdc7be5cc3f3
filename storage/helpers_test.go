package storage

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// testOptions keeps Pebble small so tests flush and compact quickly, and
// turns the periodic disk check off (tests call CheckDisk).
func testOptions(fs vfs.FS) Options {
	return Options{
		FS:                fs,
		MemTableSize:      1 << 20,
		CacheSize:         1 << 20,
		DiskCheckInterval: -1,
	}
}

func openEngine(t testing.TB, dir string, opts Options) *Engine {
	t.Helper()
	var log *zap.Logger
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt, zaptest.Level(zap.WarnLevel))
	}
	e, err := Open(dir, opts, log)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return e
}

func raftLog(t testing.TB, e *Engine, group uint64) *RaftLog {
	t.Helper()
	l, err := e.RaftLog(group)
	if err != nil {
		t.Fatalf("RaftLog(%d): %v", group, err)
	}
	return l
}

// payload is the deterministic body of entry (group, index, term), so a
// reader can tell an intact entry from a torn or foreign one.
func payload(group, index, term uint64, size int) []byte {
	head := fmt.Sprintf("g%d/i%d/t%d/", group, index, term)
	b := bytes.Repeat([]byte(head), size/len(head)+1)
	return b[:max(size, len(head))]
}

func entry(group, index, term uint64, size int) *raftpb.Entry {
	return &raftpb.Entry{Index: new(index), Term: new(term), Data: payload(group, index, term, size)}
}

func entries(group, lo, hi, term uint64, size int) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := lo; i < hi; i++ {
		out = append(out, entry(group, i, term, size))
	}
	return out
}

// write runs f on a fresh batch and commits it with sync.
func write(t testing.TB, e *Engine, f func(b *Batch) error) {
	t.Helper()
	b := e.NewBatch()
	defer b.Close()
	if err := f(b); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
}

func appendEntries(t testing.TB, e *Engine, l *RaftLog, ents []*raftpb.Entry) {
	t.Helper()
	write(t, e, func(b *Batch) error { return l.Append(b, ents) })
}

// checkEntries asserts l holds exactly [lo, hi) with the given term and the
// payloads entry() builds.
func checkEntries(t testing.TB, l *RaftLog, lo, hi, term uint64, size int) {
	t.Helper()
	got, err := l.Entries(lo, hi, ^uint64(0))
	if err != nil {
		t.Fatalf("Entries(%d, %d): %v", lo, hi, err)
	}
	if uint64(len(got)) != hi-lo {
		t.Fatalf("Entries(%d, %d) returned %d entries", lo, hi, len(got))
	}
	for i, ent := range got {
		idx := lo + uint64(i)
		if ent.GetIndex() != idx || ent.GetTerm() != term || !bytes.Equal(ent.GetData(), payload(l.group, idx, term, size)) {
			t.Fatalf("entry %d = index %d term %d data %q", idx, ent.GetIndex(), ent.GetTerm(), trunc(ent.GetData()))
		}
	}
}

func trunc(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

func mustErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
}

// testTimeout bounds anything a test waits on; tests never assert durations.
const testTimeout = 60 * time.Second
