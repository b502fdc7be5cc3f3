package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"

	"github.com/parleymq/parley/storage/keys"
)

// Sentinel errors. Callers test them with errors.Is; the returned errors wrap
// them with the directory, group or index involved.
var (
	// ErrLocked: the data directory is in use by another Engine, in this
	// process or another.
	ErrLocked = errors.New("storage: data directory is in use by another process")
	// ErrUnknownFormat: the data directory's FORMAT file names a format this
	// build does not know, or the directory holds something that is not a
	// Parley data directory.
	ErrUnknownFormat = errors.New("storage: unknown data directory format")
	// ErrClosed: the Engine was closed.
	ErrClosed = errors.New("storage: engine closed")
	// ErrLogFailed: a batch that wrote to this RaftLog failed to commit or was
	// abandoned, so its in-memory view is ahead of the disk (see the package
	// documentation).
	ErrLogFailed = errors.New("storage: raft log unusable after a failed batch")
	// ErrDestroyed: the RaftLog's group was destroyed.
	ErrDestroyed = errors.New("storage: raft group destroyed")
	// ErrLogGap: Append was given entries that do not follow the log or are
	// not consecutive.
	ErrLogGap = errors.New("storage: entries leave a gap in the log")
	// ErrOutOfRange: an index beyond the log's last index, or (for Compact)
	// beyond the latest snapshot.
	ErrOutOfRange = errors.New("storage: index out of range")
	// ErrCorrupt: a stored record does not decode or contradicts its key.
	ErrCorrupt = errors.New("storage: corrupt record")
)

// FormatFile is the name of the file in the data directory that names its
// format, and FormatVersion the content this build writes and accepts.
// UpgradableFormat is the one before it, which this build still reads (as it
// reads the ones before that, olderFormats): it opens such a directory and
// rewrites its FORMAT to FormatVersion before writing anything, so an older
// build, which would misread what this one writes, refuses the directory from
// then on.
const (
	FormatFile = "FORMAT"
	// 4: small durable queues may be packed into partition groups (broker/partition.go),
	// whose queue records and entries an earlier build does not know.
	FormatVersion = "parley-data 4"
	// UpgradableFormat: 3, durable queue messages are referenced by (log index, slot in a
	// batch entry).
	UpgradableFormat = "parley-data 3"
)

// olderFormats are the formats before UpgradableFormat this build still opens, and upgrades:
// 2, durable queue snapshots keep bodies in the log.
var olderFormats = []string{"parley-data 2"}

// lockFile is Pebble's own lock file name (dir/LOCK): Pebble takes an fcntl
// write lock on it, which excludes other processes, and also remembers the
// locks this process holds, which excludes a second Engine in-process. We take
// that lock ourselves before Pebble opens, so we can say clearly why we refuse.
const lockFile = "LOCK"

// AlarmKind names a resource alarm.
type AlarmKind int

const (
	// AlarmWriteStall: Pebble is delaying writes until flushes or compactions
	// catch up (too many memtables queued or too many L0 files).
	AlarmWriteStall AlarmKind = iota + 1
	// AlarmDiskLow: the data directory's filesystem has less free space than
	// Options.MinFreeDiskBytes, or a write failed for lack of space.
	AlarmDiskLow
)

func (k AlarmKind) String() string {
	switch k {
	case AlarmWriteStall:
		return "write-stall"
	case AlarmDiskLow:
		return "disk-low"
	}
	return fmt.Sprintf("alarm(%d)", int(k))
}

// Alarm is one change of a resource alarm: raised (Active) or cleared. The
// broker blocks publishers while any alarm is active (DESIGN.md §4).
type Alarm struct {
	Kind   AlarmKind
	Active bool
	Reason string
}

// Metrics are cumulative counters since Open, plus a few gauges.
type Metrics struct {
	Batches     uint64 // batches committed
	SyncCommits uint64 // of those, committed with sync: each is one fsync (Pebble may merge concurrent ones further)
	Operations  uint64 // Pebble operations in committed batches
	Entries     uint64 // raft log entries in committed batches
	Bytes       uint64 // bytes of committed batches (their Pebble representation)
	WriteStalls uint64 // write stalls begun

	WriteStalled bool   // a write stall is in progress
	DiskLow      bool   // AlarmDiskLow is active
	DiskUsage    uint64 // bytes Pebble's files use on disk, obsolete ones not yet deleted included
	LiveBytes    uint64 // bytes of live sstables and blob files: what the data needs once obsolete files are gone
	WALBytes     uint64 // bytes written to the write-ahead log
}

// Engine is one node's Pebble database: every raft group's log and state.
type Engine struct {
	db   *pebble.DB
	lock *pebble.Lock
	fs   vfs.FS
	dir  string
	opts Options
	log  *zap.Logger

	mu       sync.Mutex
	closed   bool
	isClosed atomic.Bool // closed, readable without mu (RaftLog.mu is taken after Engine.mu)
	logs     map[uint64]*RaftLog

	batches, syncs, ops, entries, bytes, stalls atomic.Uint64
	stalled, diskLow                            atomic.Bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// Open opens (or creates) the data directory dir. It refuses a directory in
// use by another process (ErrLocked) and one whose FORMAT file names an
// unknown format, or that holds files but no FORMAT (ErrUnknownFormat). The
// lock is held until Close. log may be nil.
func Open(dir string, opts Options, log *zap.Logger) (*Engine, error) {
	opts.ensureDefaults()
	if log == nil {
		log = zap.NewNop()
	}
	fsys := opts.FS
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage: create data directory %s: %w", dir, err)
	}
	lock, err := pebble.LockDirectory(dir, fsys)
	if err != nil {
		var pathErr *fs.PathError
		if errors.As(err, &pathErr) {
			// Creating the lock file failed (permissions, read-only fs): not
			// a conflict with another process.
			return nil, fmt.Errorf("storage: lock data directory %s: %w", dir, err)
		}
		return nil, fmt.Errorf("%w: %s (%s is locked: %v)", ErrLocked, dir, fsys.PathJoin(dir, lockFile), err)
	}
	e := &Engine{
		lock: lock,
		fs:   fsys,
		dir:  dir,
		opts: opts,
		log:  log,
		logs: make(map[uint64]*RaftLog),
		stop: make(chan struct{}),
	}
	if err := e.checkFormat(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	db, err := pebble.Open(dir, e.pebbleOptions())
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("storage: open pebble in %s: %w", dir, err)
	}
	e.db = db
	e.CheckDisk()
	if opts.DiskCheckInterval > 0 {
		e.wg.Add(1)
		go e.watchDisk(opts.DiskCheckInterval)
	}
	return e, nil
}

// checkFormat accepts a directory with our FORMAT, or one with nothing in it
// but our lock (a fresh directory, or a first Open that crashed before
// writing FORMAT), in which case it writes FORMAT before Pebble creates
// anything, so a directory with Pebble files always has a FORMAT.
func (e *Engine) checkFormat() error {
	path := e.fs.PathJoin(e.dir, FormatFile)
	f, err := e.fs.Open(path)
	if err == nil {
		content, rerr := io.ReadAll(io.LimitReader(f, 256))
		_ = f.Close()
		if rerr != nil {
			return fmt.Errorf("storage: read %s: %w", path, rerr)
		}
		got := strings.TrimSpace(string(content))
		if got == UpgradableFormat || slices.Contains(olderFormats, got) {
			return e.writeFormat(path)
		}
		if got != FormatVersion {
			return fmt.Errorf("%w: %s says %q, this build understands %q", ErrUnknownFormat, path, got, FormatVersion)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: open %s: %w", path, err)
	}
	names, err := e.fs.List(e.dir)
	if err != nil {
		return fmt.Errorf("storage: list %s: %w", e.dir, err)
	}
	for _, n := range names {
		if n != lockFile && n != FormatFile+".tmp" {
			return fmt.Errorf("%w: %s holds %q but no %s file: not a Parley data directory", ErrUnknownFormat, e.dir, n, FormatFile)
		}
	}
	return e.writeFormat(path)
}

// writeFormat writes FORMAT atomically: a temporary file, synced, renamed,
// and the directory synced, so a crash leaves either no FORMAT or a whole one.
func (e *Engine) writeFormat(path string) error {
	tmp := path + ".tmp"
	f, err := e.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("storage: create %s: %w", tmp, err)
	}
	if _, err := f.Write([]byte(FormatVersion + "\n")); err != nil {
		_ = f.Close()
		return fmt.Errorf("storage: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("storage: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("storage: close %s: %w", tmp, err)
	}
	if err := e.fs.Rename(tmp, path); err != nil {
		return fmt.Errorf("storage: rename %s: %w", tmp, err)
	}
	d, err := e.fs.OpenDir(e.dir)
	if err != nil {
		return fmt.Errorf("storage: open directory %s: %w", e.dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("storage: sync directory %s: %w", e.dir, err)
	}
	return nil
}

func (e *Engine) pebbleOptions() *pebble.Options {
	o := e.opts
	po := &pebble.Options{
		FS:                          o.FS,
		Lock:                        e.lock,
		MemTableSize:                o.MemTableSize,
		MemTableStopWritesThreshold: o.MemTableStopWritesThreshold,
		CacheSize:                   o.CacheSize,
		L0CompactionThreshold:       o.L0CompactionThreshold,
		L0StopWritesThreshold:       o.L0StopWritesThreshold,
		LBaseMaxBytes:               o.LBaseMaxBytes,
		BytesPerSync:                o.BytesPerSync,
		// FormatNewest is needed for value separation (blob files).
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{e.log.Sugar()},
	}
	if !o.RecycleWAL {
		po.Cleaner = noRecycleCleaner{}
	}
	if o.FlushDelayDeleteRange > 0 {
		po.FlushDelayDeleteRange = o.FlushDelayDeleteRange
	}
	maxCompactions := o.MaxConcurrentCompactions
	po.CompactionConcurrencyRange = func() (int, int) { return 1, maxCompactions }
	if o.ValueSeparationMinSize > 0 {
		minSize := o.ValueSeparationMinSize
		po.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
			return pebble.ValueSeparationPolicy{
				Enabled:               true,
				MinimumSize:           minSize,
				MaxBlobReferenceDepth: 10,
				RewriteMinimumAge:     5 * time.Minute,
				TargetGarbageRatio:    0.2,
			}
		}
	}
	el := pebble.EventListener{
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			e.stalls.Add(1)
			if !e.stalled.Swap(true) {
				e.alarm(Alarm{Kind: AlarmWriteStall, Active: true, Reason: info.Reason})
			}
		},
		WriteStallEnd: func() {
			if e.stalled.Swap(false) {
				e.alarm(Alarm{Kind: AlarmWriteStall, Active: false, Reason: "write stall ended"})
			}
		},
		LowDiskSpace: func(pebble.LowDiskSpaceInfo) { e.CheckDisk() },
		BackgroundError: func(err error) {
			e.log.Error("pebble background error", zap.Error(err))
			if errors.Is(err, syscall.ENOSPC) {
				e.setDiskLow(true, "background write: no space left on device")
			}
		},
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			e.log.Error("pebble data corruption", zap.String("info", info.String()))
		},
	}
	if o.EventListener != nil {
		el = pebble.TeeEventListener(el, *o.EventListener)
	}
	po.EventListener = &el
	return po
}

// noRecycleCleaner deletes obsolete files, as Pebble's default cleaner does,
// and also turns off Pebble's recycling of WAL files. Pebble recycles WAL
// files unless its cleaner declares that it needs obsolete files' contents,
// through an unexported method only pebble.ArchiveCleaner has; Pebble offers
// no other switch. So the ArchiveCleaner is embedded one level deeper than the
// DeleteCleaner: its marker method is promoted, while Clean and String come
// from the DeleteCleaner (the shallower one wins). TestWALNotRecycled checks
// that this still turns recycling off.
type noRecycleCleaner struct {
	pebble.DeleteCleaner
	archiveMarker
}

type archiveMarker struct{ pebble.ArchiveCleaner }

// pebbleLogger routes Pebble's few log lines into zap.
type pebbleLogger struct{ s *zap.SugaredLogger }

func (l pebbleLogger) Infof(format string, args ...any)  { l.s.Infof("pebble: "+format, args...) }
func (l pebbleLogger) Errorf(format string, args ...any) { l.s.Errorf("pebble: "+format, args...) }

// Fatalf must not return (Pebble calls it when it cannot go on). We panic
// rather than exit so a test or the server's top level sees where it came from.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.s.Errorf("pebble: "+format, args...)
	panic(fmt.Sprintf("pebble: "+format, args...))
}

func (e *Engine) alarm(a Alarm) {
	e.log.Warn("storage alarm", zap.Stringer("kind", a.Kind), zap.Bool("active", a.Active), zap.String("reason", a.Reason))
	if e.opts.Alarm != nil {
		e.opts.Alarm(a)
	}
}

func (e *Engine) setDiskLow(low bool, reason string) {
	if e.diskLow.Swap(low) != low {
		e.alarm(Alarm{Kind: AlarmDiskLow, Active: low, Reason: reason})
	}
}

// CheckDisk compares the free space of the data directory's filesystem with
// Options.MinFreeDiskBytes now, raising or clearing AlarmDiskLow. A
// filesystem that reports no total size (an in-memory one) is not checked.
func (e *Engine) CheckDisk() {
	u, err := e.fs.GetDiskUsage(e.dir)
	if err != nil || u.TotalBytes == 0 {
		return
	}
	if u.AvailBytes < e.opts.MinFreeDiskBytes {
		e.setDiskLow(true, fmt.Sprintf("%d bytes free in %s, below the %d-byte minimum", u.AvailBytes, e.dir, e.opts.MinFreeDiskBytes))
	} else {
		e.setDiskLow(false, fmt.Sprintf("%d bytes free in %s", u.AvailBytes, e.dir))
	}
}

func (e *Engine) watchDisk(every time.Duration) {
	defer e.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.CheckDisk()
		}
	}
}

// DiskFree is the space available to this process on the data directory's
// filesystem (statfs).
func (e *Engine) DiskFree() (uint64, error) {
	u, err := e.fs.GetDiskUsage(e.dir)
	if err != nil {
		return 0, fmt.Errorf("storage: disk usage of %s: %w", e.dir, err)
	}
	return u.AvailBytes, nil
}

// Close closes the database and releases the directory lock. Batches must be
// closed first. Close is idempotent.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.isClosed.Store(true)
	e.logs = nil
	e.mu.Unlock()
	close(e.stop)
	e.wg.Wait()
	err := e.db.Close()
	if lerr := e.lock.Close(); err == nil && lerr != nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("storage: close %s: %w", e.dir, err)
	}
	return nil
}

// Metrics returns the engine's counters and a few of Pebble's gauges.
func (e *Engine) Metrics() Metrics {
	m := Metrics{
		Batches:      e.batches.Load(),
		SyncCommits:  e.syncs.Load(),
		Operations:   e.ops.Load(),
		Entries:      e.entries.Load(),
		Bytes:        e.bytes.Load(),
		WriteStalls:  e.stalls.Load(),
		WriteStalled: e.stalled.Load(),
		DiskLow:      e.diskLow.Load(),
	}
	if pm := e.db.Metrics(); pm != nil {
		m.DiskUsage = pm.DiskSpaceUsage()
		m.LiveBytes = pm.Table.Local.LiveSize + pm.BlobFiles.Local.LiveSize
		m.WALBytes = pm.WAL.BytesWritten
	}
	return m
}

// Compact flushes the memtables and compacts the whole keyspace, so that
// range deletions give their space back now rather than when Pebble gets to
// them. For tests and operator tools; Pebble compacts on its own otherwise.
func (e *Engine) Compact(ctx context.Context) error {
	if err := e.db.Flush(); err != nil {
		return fmt.Errorf("storage: flush: %w", err)
	}
	if err := e.db.Compact(ctx, []byte{0x00}, []byte{0xff}, true); err != nil {
		return fmt.Errorf("storage: compact: %w", err)
	}
	return nil
}

// Groups lists every raft group with any state on disk, ascending, so
// recovery can reopen them. It skips over each group's log with one seek.
func (e *Engine) Groups() ([]uint64, error) {
	it, err := e.db.NewIter(&pebble.IterOptions{})
	if err != nil {
		return nil, fmt.Errorf("storage: groups: %w", err)
	}
	defer it.Close()
	var groups []uint64
	for valid := it.First(); valid; {
		k := it.Key()
		t, g, _, perr := keys.Parse(k)
		if perr != nil {
			// Not ours (nothing else writes here today): step over it.
			valid = it.Next()
			continue
		}
		if t == keys.TableNode {
			valid = it.Next() // a node record, not a group
			continue
		}
		groups = append(groups, g)
		if t == keys.TableLogEntry {
			_, end := keys.LogPrefixRange(g)
			valid = it.SeekGE(end)
		} else {
			valid = it.Next()
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("storage: groups: %w", err)
	}
	slices.Sort(groups)
	return slices.Compact(groups), nil
}

// get reads one value, copied out of Pebble; nil, nil when absent.
func (e *Engine) get(key []byte) ([]byte, error) {
	v, closer, err := e.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage: get %s: %w", keys.String(key), err)
	}
	out := bytes.Clone(v)
	if out == nil {
		out = []byte{}
	}
	_ = closer.Close()
	return out, nil
}

// RaftLog returns group's raft log, loading its state from disk the first
// time. There is one RaftLog per group per Engine: repeated calls return the
// same one.
func (e *Engine) RaftLog(group uint64) (*RaftLog, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	if l, ok := e.logs[group]; ok {
		return l, nil
	}
	l, err := loadRaftLog(e, group)
	if err != nil {
		return nil, err
	}
	e.logs[group] = l
	return l, nil
}

// forget drops a destroyed group's RaftLog once its destruction committed, so
// a later RaftLog call starts the group afresh.
func (e *Engine) forget(l *RaftLog) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.logs[l.group] == l {
		delete(e.logs, l.group)
	}
}

// NodeRecord reads node record id (keys.NodeMembers): nil, nil when it was never written.
func (e *Engine) NodeRecord(id uint64) ([]byte, error) {
	if e.isClosed.Load() {
		return nil, ErrClosed
	}
	return e.get(keys.Node(id))
}

// SetNodeRecord writes node record id and syncs it: records are rare and must survive a crash.
func (e *Engine) SetNodeRecord(id uint64, value []byte) error {
	if e.isClosed.Load() {
		return ErrClosed
	}
	if err := e.db.Set(keys.Node(id), value, pebble.Sync); err != nil {
		return fmt.Errorf("storage: write %s: %w", keys.String(keys.Node(id)), err)
	}
	return nil
}
