package broker

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/parleymq/parley/cluster"
)

// BenchmarkSetRetained sets PARLEY_BENCH_RETAINED (default 10,000) retained messages one by one,
// each a new topic, on a fresh node over real storage, and reports what that wrote to the
// storage engine (only group 0 changes: no queue is declared) and how long it took. Snapshots are
// taken as the host's defaults say (every 10,000 entries), so their bytes are part of the figure.
//
//	PARLEY_BENCH_RETAINED=10000 go test -run '^$' -bench BenchmarkSetRetained -benchtime 1x ./broker/
func BenchmarkSetRetained(b *testing.B) {
	n := 10000
	if s := os.Getenv("PARLEY_BENCH_RETAINED"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	for range b.N {
		b.StopTimer()
		nd := openNodeHost(b, b.TempDir(), cluster.Config{NodeID: 1})
		v, _ := nd.b.VHost("/")
		before := nd.eng.Metrics().Bytes
		start := time.Now()
		b.StartTimer()
		for i := range n {
			m := msg("amq.topic", "", fmt.Sprintf("temperature %d", i))
			if err := v.SetRetained(fmt.Sprintf("site/%05d/temperature", i), m); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		elapsed := time.Since(start)
		written := nd.eng.Metrics().Bytes - before
		b.ReportMetric(float64(written), "bytes-written")
		b.ReportMetric(float64(written)/float64(n), "bytes-written/retained")
		b.ReportMetric(elapsed.Seconds(), "seconds")
		nd.close()
	}
}
