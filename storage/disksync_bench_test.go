package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"
)

// BenchmarkDiskSync measures what one fsync costs on the disk under the test's temp dir,
// without Pebble: a write of size bytes followed by fdatasync, appending to a growing file
// (what Pebble's WAL does, the file's size changing each time) or overwriting a preallocated
// one (what WAL recycling would do), and the same write through O_DSYNC. It reports the
// median and p90 per write; ns/op is the mean. With a confirm window of W messages and a
// serial stream of fsyncs of F each, a message that arrives during one fsync is written by
// the next, so a publisher cannot get more than about W/(2F) confirms a second: this is the
// F to put there (docs/performance.md, run 9).
func BenchmarkDiskSync(b *testing.B) {
	for _, mode := range []string{"append", "overwrite", "dsync"} {
		for _, size := range []int{8 << 10, 128 << 10} {
			b.Run(fmt.Sprintf("%s/%dKiB", mode, size>>10), func(b *testing.B) {
				benchDiskSync(b, mode, size)
			})
		}
	}
}

func benchDiskSync(b *testing.B, mode string, size int) {
	flags := os.O_CREATE | os.O_RDWR
	if mode == "dsync" {
		flags |= syscall.O_DSYNC
	}
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "sync"), flags, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i)
	}
	if mode == "overwrite" {
		if _, err := f.Write(make([]byte, size*b.N)); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		if _, err := f.Seek(0, 0); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if mode != "dsync" {
			if err := syscall.Fdatasync(int(f.Fd())); err != nil {
				b.Fatal(err)
			}
		}
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds()), "p90-µs")
}
