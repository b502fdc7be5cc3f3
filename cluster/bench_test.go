package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// BenchmarkPropose measures proposals committed (fsynced) and applied per
// second, on real Pebble in a temporary directory, with many proposers each
// waiting for its future: the publisher-confirm pattern.
func BenchmarkPropose(b *testing.B) {
	for _, ngroups := range []int{1, 8} {
		b.Run(fmt.Sprintf("groups=%d", ngroups), func(b *testing.B) {
			ctx := context.Background()
			eng := openEngine(b, b.TempDir(), vfs.Default)
			defer eng.Close()
			h := startHost(b, Config{}, eng)
			defer h.Stop()
			groups := make([]*Group, ngroups)
			for i := range groups {
				groups[i] = addGroup(b, ctx, h, uint64(i+1), newKV())
			}
			payload := make([]byte, 256)
			copy(payload, "k=")
			var next atomic.Uint64
			b.SetParallelism(16)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				g := groups[next.Add(1)%uint64(len(groups))]
				for pb.Next() {
					f, err := g.Propose(ctx, payload)
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := f.Wait(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			m := h.Metrics()
			b.ReportMetric(m.EntriesPerFsync, "entries/fsync")
		})
	}
}
