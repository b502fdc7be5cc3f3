package cluster

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A lone voter's group with no snapshot yet (so storage knows no configuration before its
// entries are applied again) recovers every entry of its log when AddGroup returns after a
// crash: each was fsynced by the only voter, so each is committed, even where the stored
// commit index lags behind (it is persisted with the next Ready). A broker reads its queue
// once, right after AddGroup: an entry applied later would be a confirmed message missing.
func TestLoneVoterRecoversEveryEntryWithoutSnapshot(t *testing.T) {
	ctx := testContext(t)
	const dir = "/data"
	fs := vfs.NewCrashableMem()
	eng := openEngine(t, dir, fs)
	h := startHost(t, Config{}, eng)
	g := addGroup(t, ctx, h, 7, newKV())
	const n = 20
	for i := range n {
		f, err := g.Propose(ctx, []byte(fmt.Sprintf("k%d=v", i)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Crash right after the last acknowledgement: only what was synced survives.
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	h.Stop()
	_ = eng.Close()

	eng = openEngine(t, dir, crashed)
	defer eng.Close()
	h = startHost(t, Config{}, eng)
	defer h.Stop()
	sm := newKV()
	addGroup(t, context.Background(), h, 7, sm)
	if data, _ := sm.state(); len(data) != n {
		t.Fatalf("AddGroup returned with %d of the %d acknowledged entries applied", len(data), n)
	}
}
