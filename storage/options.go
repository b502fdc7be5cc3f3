package storage

import (
	"runtime"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Options configures an Engine. The zero value of every field means its
// default; DefaultOptions returns the defaults filled in, for display.
type Options struct {
	// FS is the filesystem the engine lives on. Default: vfs.Default (the
	// operating system's). Tests pass vfs.NewCrashableMem() to simulate
	// crashes that lose unsynced writes.
	FS vfs.FS

	// MemTableSize is the size of one Pebble memtable. A larger memtable lets
	// more log entries be written, snapshotted and range-deleted before they
	// ever reach an sstable. Default: 64 MiB.
	MemTableSize uint64

	// MemTableStopWritesThreshold is how many memtables may queue for flushing
	// before Pebble stops writes (a write stall). Default: 4.
	MemTableStopWritesThreshold int

	// CacheSize is the size of Pebble's block cache. The log is mostly written,
	// read back only by lagging followers and restarts, so the cache can be
	// modest. Default: 128 MiB.
	CacheSize int64

	// L0CompactionThreshold is the L0 read-amplification at which Pebble
	// starts compacting L0. Default: 4.
	L0CompactionThreshold int

	// L0StopWritesThreshold is the L0 read-amplification at which Pebble
	// stops writes (a write stall, raising AlarmWriteStall). Default: 24.
	L0StopWritesThreshold int

	// LBaseMaxBytes is the target size of the LSM's base level. Default: 64 MiB.
	LBaseMaxBytes int64

	// MaxConcurrentCompactions bounds Pebble's background compactions.
	// Default: min(4, GOMAXPROCS).
	MaxConcurrentCompactions int

	// BytesPerSync makes Pebble sync sstables incrementally while writing them
	// so the final fsync has little left to do. Default: 512 KiB.
	BytesPerSync int

	// ValueSeparationMinSize is the smallest value Pebble moves out of its
	// sstables into blob files (Pebble's value separation), so compactions
	// stop rewriting large message bodies. Below about 1 KiB the extra
	// indirection costs more than rewriting the value. Negative disables
	// value separation. Default: 1 KiB.
	ValueSeparationMinSize int

	// RecycleWAL keeps Pebble's recycling of write-ahead log files: up to
	// MemTableStopWritesThreshold+1 obsolete WAL files, each up to about a
	// memtable (64 MiB by default), are kept to be overwritten instead of
	// deleted, which saves a little file-system metadata work per fsync but
	// keeps up to ~350 MB on disk forever once a burst went through, whatever
	// was acknowledged since. Default: false: obsolete WAL files are deleted,
	// so the space a drained queue used comes back (DESIGN.md §4).
	RecycleWAL bool

	// FlushDelayDeleteRange is how long a memtable holding a range deletion
	// (a compacted raft log) may wait before Pebble flushes it even though it
	// is not full. Until it is flushed, neither the sstables and blob files
	// the deletion covers nor the WAL behind the memtable can be removed, so
	// on a quiet broker the space of the last burst would stay. Negative
	// disables the forced flush. Default: 10 s.
	FlushDelayDeleteRange time.Duration

	// TailCacheBytes bounds the recent log entries each RaftLog keeps in
	// memory so the leader's replication path and recent reads never touch
	// Pebble. It is per group: the engine's worst case is groups × this.
	// Entries not yet committed to Pebble are kept even above the bound.
	// Negative disables the cache. Default: 1 MiB.
	TailCacheBytes int

	// MinFreeDiskBytes is the free space on the data directory's filesystem
	// below which the engine raises AlarmDiskLow. Default: 50 MB (RabbitMQ's disk_free_limit).
	MinFreeDiskBytes uint64

	// DiskCheckInterval is how often a background goroutine compares the
	// free disk space with MinFreeDiskBytes; Pebble's LowDiskSpace event and
	// an out-of-space error on commit also trigger a check. Negative disables
	// the periodic check (CheckDisk still works). Default: 10 s.
	DiskCheckInterval time.Duration

	// Alarm, if set, is told when a resource alarm is raised or cleared. It
	// runs on Pebble's or the engine's goroutines and must return quickly
	// without calling into the Engine. Default: nil.
	Alarm func(Alarm)

	// EventListener, if set, also receives every Pebble event (the engine
	// installs its own listener for stalls and disk space and tees to this
	// one). Default: nil.
	EventListener *pebble.EventListener
}

// Defaults, named for the documentation above and for tests.
const (
	DefaultMemTableSize                = 64 << 20
	DefaultMemTableStopWritesThreshold = 4
	DefaultCacheSize                   = 128 << 20
	DefaultL0CompactionThreshold       = 4
	DefaultL0StopWritesThreshold       = 24
	DefaultLBaseMaxBytes               = 64 << 20
	DefaultBytesPerSync                = 512 << 10
	DefaultValueSeparationMinSize      = 1 << 10
	DefaultTailCacheBytes              = 1 << 20
	DefaultFlushDelayDeleteRange       = 10 * time.Second
	DefaultMinFreeDiskBytes            = 50_000_000
	DefaultDiskCheckInterval           = 10 * time.Second
)

// DefaultOptions returns Options with every default filled in.
func DefaultOptions() Options {
	var o Options
	o.ensureDefaults()
	return o
}

func (o *Options) ensureDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.MemTableStopWritesThreshold == 0 {
		o.MemTableStopWritesThreshold = DefaultMemTableStopWritesThreshold
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.L0CompactionThreshold == 0 {
		o.L0CompactionThreshold = DefaultL0CompactionThreshold
	}
	if o.L0StopWritesThreshold == 0 {
		o.L0StopWritesThreshold = DefaultL0StopWritesThreshold
	}
	if o.LBaseMaxBytes == 0 {
		o.LBaseMaxBytes = DefaultLBaseMaxBytes
	}
	if o.MaxConcurrentCompactions == 0 {
		o.MaxConcurrentCompactions = min(4, runtime.GOMAXPROCS(0))
	}
	if o.BytesPerSync == 0 {
		o.BytesPerSync = DefaultBytesPerSync
	}
	if o.ValueSeparationMinSize == 0 {
		o.ValueSeparationMinSize = DefaultValueSeparationMinSize
	}
	if o.FlushDelayDeleteRange == 0 {
		o.FlushDelayDeleteRange = DefaultFlushDelayDeleteRange
	}
	if o.TailCacheBytes == 0 {
		o.TailCacheBytes = DefaultTailCacheBytes
	}
	if o.MinFreeDiskBytes == 0 {
		o.MinFreeDiskBytes = DefaultMinFreeDiskBytes
	}
	if o.DiskCheckInterval == 0 {
		o.DiskCheckInterval = DefaultDiskCheckInterval
	}
}
