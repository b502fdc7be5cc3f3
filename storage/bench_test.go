package storage

import (
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// BenchmarkAppendCommit is one Ready cycle of the broker's hot path: 64
// entries of 1 KB spread over 8 groups, appended into one batch and committed
// with one fsync, on a real directory. It reports entries per fsync and
// entries per second.
func BenchmarkAppendCommit(b *testing.B) {
	const groups, perGroup, size = 8, 8, 1024
	e := openEngine(b, b.TempDir(), Options{DiskCheckInterval: -1})
	defer e.Close()
	logs := make([]*RaftLog, groups)
	next := make([]uint64, groups)
	for g := range logs {
		logs[g] = raftLog(b, e, uint64(g+1))
		next[g] = 1
	}
	body := make([]byte, size)
	batch := make([]*raftpb.Entry, perGroup)
	b.SetBytes(groups * perGroup * size)
	b.ResetTimer()
	for range b.N {
		bt := e.NewBatch()
		for g, l := range logs {
			for i := range batch {
				batch[i] = &raftpb.Entry{Index: new(next[g] + uint64(i)), Term: new(uint64(1)), Data: body}
			}
			if err := l.Append(bt, batch); err != nil {
				b.Fatal(err)
			}
			next[g] += perGroup
		}
		if err := bt.Commit(true); err != nil {
			b.Fatal(err)
		}
		bt.Close()
	}
	b.StopTimer()
	m := e.Metrics()
	b.ReportMetric(float64(m.Entries)/float64(m.SyncCommits), "entries/fsync")
	b.ReportMetric(float64(m.Entries)/b.Elapsed().Seconds(), "entries/s")
}
