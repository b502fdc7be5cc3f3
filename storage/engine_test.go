package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/parleymq/parley/storage/keys"
)

func TestOpenWritesFormat(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, testOptions(nil))
	e.Close()
	b, err := os.ReadFile(filepath.Join(dir, FormatFile))
	if err != nil || string(b) != FormatVersion+"\n" {
		t.Fatalf("FORMAT = %q %v", b, err)
	}
	openEngine(t, dir, testOptions(nil)).Close() // and accepts it
}

// A directory of the previous format opens, and says the current one from then on, so an
// older build refuses it.
func TestOpenUpgradesPreviousFormat(t *testing.T) {
	dir := t.TempDir()
	openEngine(t, dir, testOptions(nil)).Close()
	path := filepath.Join(dir, FormatFile)
	if err := os.WriteFile(path, []byte(UpgradableFormat+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	openEngine(t, dir, testOptions(nil)).Close()
	if b, err := os.ReadFile(path); err != nil || string(b) != FormatVersion+"\n" {
		t.Fatalf("FORMAT after opening a %q directory = %q %v", UpgradableFormat, b, err)
	}
}

func TestOpenRefusesUnknownFormat(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FormatFile), []byte("parley-data 99\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, testOptions(nil), nil)
	mustErr(t, err, ErrUnknownFormat)
	if !strings.Contains(err.Error(), "parley-data 99") {
		t.Fatalf("error does not say what it found: %v", err)
	}

	// A directory with files but no FORMAT is someone else's.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "MANIFEST-000001"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(other, testOptions(nil), nil)
	mustErr(t, err, ErrUnknownFormat)
}

func TestOpenRefusesLockedDirectory(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, testOptions(nil))
	_, err := Open(dir, testOptions(nil), nil)
	mustErr(t, err, ErrLocked)
	if !strings.Contains(err.Error(), dir) {
		t.Fatalf("error does not name the directory: %v", err)
	}
	e.Close()
	openEngine(t, dir, testOptions(nil)).Close() // released on Close
}

const lockChildEnv = "PARLEY_STORAGE_LOCK_CHILD_DIR"

// TestOpenRefusesDirectoryLockedByAnotherProcess runs this test binary again
// as a child that opens the same directory: the broker's real case.
func TestOpenRefusesDirectoryLockedByAnotherProcess(t *testing.T) {
	if dir := os.Getenv(lockChildEnv); dir != "" {
		_, err := Open(dir, testOptions(nil), nil)
		if errors.Is(err, ErrLocked) {
			os.Exit(3)
		}
		t.Logf("child Open: %v", err)
		os.Exit(4)
	}
	dir := t.TempDir()
	e := openEngine(t, dir, testOptions(nil))
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestOpenRefusesDirectoryLockedByAnotherProcess$", "-test.v")
	cmd.Env = append(os.Environ(), lockChildEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("child Open of a locked directory: %v, want exit 3 (ErrLocked)\n%s", err, out)
	}
}

func TestDiskAlarm(t *testing.T) {
	fs := vfs.NewMem()
	var mu sync.Mutex
	var alarms []Alarm
	opts := testOptions(fs)
	opts.MinFreeDiskBytes = 1000
	opts.Alarm = func(a Alarm) { mu.Lock(); alarms = append(alarms, a); mu.Unlock() }
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 5000, TotalBytes: 10000})
	e := openEngine(t, "data", opts)
	defer e.Close()
	if free, err := e.DiskFree(); err != nil || free != 5000 {
		t.Fatalf("DiskFree = %d %v", free, err)
	}
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 999, TotalBytes: 10000})
	e.CheckDisk()
	e.CheckDisk() // raised once, not per check
	if !e.Metrics().DiskLow {
		t.Fatal("Metrics.DiskLow not set")
	}
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 2000, TotalBytes: 10000})
	e.CheckDisk()
	mu.Lock()
	defer mu.Unlock()
	if len(alarms) != 2 || alarms[0].Kind != AlarmDiskLow || !alarms[0].Active || alarms[1].Active {
		t.Fatalf("alarms = %+v, want disk-low raised then cleared", alarms)
	}
}

// TestCompactUsesOneDeleteRangeAndFreesSpace writes a few MB of log, then
// snapshots and compacts it: the batch holds one range deletion (not an
// operation per entry) and, once Pebble compacts, the space comes back.
func TestCompactUsesOneDeleteRangeAndFreesSpace(t *testing.T) {
	e := openEngine(t, t.TempDir(), testOptions(nil))
	defer e.Close()
	l := raftLog(t, e, 1)
	const n, size = 2000, 4096
	for i := uint64(1); i <= n; i += 100 {
		appendEntries(t, e, l, entries(1, i, i+100, 1, size))
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	before := e.Metrics().LiveBytes
	if before < 100<<10 { // the payloads compress well, but not to nothing
		t.Fatalf("disk usage %d before compaction, expected the log's megabytes", before)
	}
	b := e.NewBatch()
	if err := l.CreateSnapshot(b, n, &raftpb.ConfState{Voters: []uint64{1}}, []byte("small")); err != nil {
		t.Fatal(err)
	}
	ops := b.Len()
	if err := l.Compact(b, n); err != nil {
		t.Fatal(err)
	}
	if got := b.Len() - ops; got != 2 { // one DeleteRange + the truncation record
		t.Fatalf("Compact wrote %d operations, want 2", got)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	after := e.Metrics().LiveBytes
	t.Logf("live bytes %d -> %d (disk usage %d)", before, after, e.Metrics().DiskUsage)
	if after > before/10 {
		t.Fatalf("disk usage %d after compacting away %d bytes of log (was %d)", after, n*size, before)
	}
	if fi, _ := l.FirstIndex(); fi != n+1 {
		t.Fatalf("FirstIndex = %d", fi)
	}
}

func TestMetricsCountGroupCommit(t *testing.T) {
	e := openEngine(t, t.TempDir(), testOptions(nil))
	defer e.Close()
	b := e.NewBatch()
	for g := uint64(1); g <= 8; g++ {
		if err := raftLog(t, e, g).Append(b, entries(g, 1, 9, 1, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if b.Entries() != 64 || b.Len() != 64 {
		t.Fatalf("batch Entries %d Len %d, want 64", b.Entries(), b.Len())
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	b.Close()
	m := e.Metrics()
	if m.Batches != 1 || m.SyncCommits != 1 || m.Entries != 64 || m.Operations != 64 || m.Bytes < 64*100 {
		t.Fatalf("metrics = %+v", m)
	}
}

func TestClosedEngine(t *testing.T) {
	e := openEngine(t, t.TempDir(), testOptions(nil))
	l := raftLog(t, e, 1)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := l.LastIndex()
	mustErr(t, err, ErrClosed)
	_, err = e.RaftLog(2)
	mustErr(t, err, ErrClosed)
	b := e.NewBatch()
	mustErr(t, b.Commit(true), ErrClosed)
	b.Close()
}

// TestWALNotRecycled checks that obsolete WAL files are deleted rather than
// kept for recycling (Options.RecycleWAL), and that with RecycleWAL Pebble
// does keep them, so the test notices if the way recycling is turned off
// (noRecycleCleaner) stops working with a newer Pebble.
func TestWALNotRecycled(t *testing.T) {
	for _, recycle := range []bool{false, true} {
		t.Run(fmt.Sprintf("RecycleWAL=%v", recycle), func(t *testing.T) {
			dir := t.TempDir()
			opts := testOptions(nil)
			opts.RecycleWAL = recycle
			e := openEngine(t, dir, opts)
			defer e.Close()
			l := raftLog(t, e, 1)
			// Several memtables' worth, so several WAL files become obsolete.
			for i := uint64(1); i <= 4000; i += 100 {
				appendEntries(t, e, l, entries(1, i, i+100, 1, 1024))
				if err := e.db.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			countLogs := func() int {
				names, err := os.ReadDir(dir)
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for _, f := range names {
					if strings.HasSuffix(f.Name(), ".log") {
						n++
					}
				}
				return n
			}
			// Pebble deletes obsolete files in the background: give it a bounded while.
			logs := countLogs()
			for deadline := time.Now().Add(10 * time.Second); !recycle && logs > 1 && time.Now().Before(deadline); logs = countLogs() {
				time.Sleep(10 * time.Millisecond)
			}
			m := e.db.Metrics()
			t.Logf("WAL files on disk %d, of which recycled %d (%d bytes)", logs, m.WAL.ObsoleteFiles, m.WAL.ObsoletePhysicalSize)
			if !recycle && (m.WAL.ObsoleteFiles != 0 || logs > 1) {
				t.Fatalf("%d WAL files on disk, %d kept for recycling; want only the live one", logs, m.WAL.ObsoleteFiles)
			}
			if recycle && m.WAL.ObsoleteFiles == 0 {
				t.Fatalf("RecycleWAL: no WAL file kept for recycling")
			}
		})
	}
}

// A node record survives a reopen and is not taken for a raft group.
func TestNodeRecord(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(dir, DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := e.NodeRecord(keys.NodeMembers); err != nil || v != nil {
		t.Fatalf("fresh record = %q, %v", v, err)
	}
	if err := e.SetNodeRecord(keys.NodeMembers, []byte("members")); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if e, err = Open(dir, DefaultOptions(), nil); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if v, err := e.NodeRecord(keys.NodeMembers); err != nil || string(v) != "members" {
		t.Fatalf("record after reopen = %q, %v", v, err)
	}
	if gs, err := e.Groups(); err != nil || len(gs) != 0 {
		t.Fatalf("groups = %v, %v; want none", gs, err)
	}
}
