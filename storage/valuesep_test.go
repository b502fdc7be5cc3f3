package storage

import (
	"context"
	"testing"
)

// TestLargeBodiesAreSeparated checks that Pebble's value separation is in
// effect: entries above ValueSeparationMinSize end up in blob files once
// flushed, small ones stay in the sstables.
func TestLargeBodiesAreSeparated(t *testing.T) {
	for _, tc := range []struct {
		size     int
		minSize  int
		wantBlob bool
	}{
		{size: 8 << 10, minSize: 0, wantBlob: true},   // default threshold, 1 KiB
		{size: 100, minSize: 0, wantBlob: false},      // small bodies stay inline
		{size: 8 << 10, minSize: -1, wantBlob: false}, // disabled
	} {
		opts := testOptions(nil)
		opts.ValueSeparationMinSize = tc.minSize
		e := openEngine(t, t.TempDir(), opts)
		l := raftLog(t, e, 1)
		appendEntries(t, e, l, entries(1, 1, 101, 1, tc.size))
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		if err := e.Compact(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		blobs := e.db.Metrics().BlobFiles.LiveCount
		if (blobs > 0) != tc.wantBlob {
			t.Errorf("size %d, min size %d: %d blob files", tc.size, tc.minSize, blobs)
		}
		checkEntries(t, l, 1, 101, 1, tc.size)
		e.Close()
	}
}
