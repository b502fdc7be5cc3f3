package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// lazyResult is a ProposeLazy callback that hands its outcome to a channel.
func lazyResult() (chan any, func(any, error)) {
	c := make(chan any, 1)
	return c, func(res any, err error) {
		if err != nil {
			c <- err
			return
		}
		c <- res
	}
}

// A lazy proposal alone stays queued (no cycle, no fsync) and goes to raft with the next eager
// proposal of any group, in the same fsync.
func TestLazyProposalRidesWithEager(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{LazyProposalDelay: time.Hour}, eng)
	defer h.Stop()
	sm1, sm2 := newKV(), newKV()
	g1 := addGroup(t, ctx, h, 1, sm1)
	g2 := addGroup(t, ctx, h, 2, sm2)
	// Settle: both groups elected and their first entries applied.
	for _, g := range []*Group{g1, g2} {
		f, err := g.Propose(ctx, []byte("warm=1"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}

	before := h.Metrics()
	got, cb := lazyResult()
	if err := g1.ProposeLazy([]byte("ack=1"), cb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the loop to hold the lazy proposal", func() bool { return h.Metrics().LazyHolds > before.LazyHolds })
	// Held, whatever the loop does meanwhile: a few more turns (pokes) do not write it.
	for range 3 {
		h.poke()
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := sm1.get("ack"); ok {
		t.Fatal("lazy proposal applied while nothing else was proposed")
	}
	if m := h.Metrics(); m.Fsyncs != before.Fsyncs {
		t.Fatalf("fsyncs went from %d to %d with only a lazy proposal queued", before.Fsyncs, m.Fsyncs)
	}

	f, err := g2.Propose(ctx, []byte("pub=1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-got:
		if err, ok := res.(error); ok {
			t.Fatalf("lazy proposal: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("lazy proposal not applied after an eager one")
	}
	if v, _ := sm1.get("ack"); v != "1" {
		t.Fatalf("lazy entry not applied: ack=%q", v)
	}
	m := h.Metrics()
	if m.Fsyncs != before.Fsyncs+1 {
		t.Fatalf("lazy and eager proposal took %d fsyncs, want 1 (shared)", m.Fsyncs-before.Fsyncs)
	}
	if m.LazyProposals != 1 {
		t.Fatalf("LazyProposals = %d, want 1", m.LazyProposals)
	}
}

// With nothing else proposed, a lazy proposal is written once its delay has passed, even on an
// idle loop; and a group's lazy and eager proposals apply in the order they were made.
func TestLazyProposalDueAndOrdered(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{LazyProposalDelay: 20 * time.Millisecond}, eng)
	defer h.Stop()
	sm := newKV()
	g := addGroup(t, ctx, h, 1, sm)

	got, cb := lazyResult()
	if err := g.ProposeLazy([]byte("k=lazy"), cb); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-got:
		if err, ok := res.(error); ok {
			t.Fatalf("lazy proposal: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("a lone lazy proposal was never written")
	}

	// Lazy, then eager, on one group: the eager one must apply after the lazy one.
	got, cb = lazyResult()
	if err := g.ProposeLazy([]byte("k=first"), cb); err != nil {
		t.Fatal(err)
	}
	f, err := g.Propose(ctx, []byte("k=second"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var first any
	select {
	case first = <-got:
	case <-ctx.Done():
		t.Fatal("lazy proposal not applied")
	}
	if first.(uint64) >= second.(uint64) {
		t.Fatalf("lazy proposal applied as #%v, after the eager one made later (#%v)", first, second)
	}
	if v, _ := sm.get("k"); v != "second" {
		t.Fatalf("k = %q, want the later proposal's value", v)
	}
}

// A negative LazyProposalDelay proposes lazy proposals at once: the loop never holds one.
func TestLazyProposalDelayOff(t *testing.T) {
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	defer eng.Close()
	h := startHost(t, Config{LazyProposalDelay: -1}, eng)
	defer h.Stop()
	g := addGroup(t, ctx, h, 1, newKV())
	for i := range 5 {
		got, cb := lazyResult()
		if err := g.ProposeLazy([]byte("k=1"), cb); err != nil {
			t.Fatal(err)
		}
		select {
		case res := <-got:
			if err, ok := res.(error); ok {
				t.Fatalf("lazy proposal %d: %v", i, err)
			}
		case <-ctx.Done():
			t.Fatal("lazy proposal not applied")
		}
	}
	if m := h.Metrics(); m.LazyHolds != 0 {
		t.Fatalf("LazyHolds = %d with the delay off", m.LazyHolds)
	}
}

// AppendLazy extends a lazy proposal while it waits in its group's queue, also behind a later
// proposal, so what it appended is applied in the same entry, before that later one; once the
// host has taken it, or when it would grow past the bound, AppendLazy refuses and changes
// nothing.
func TestAppendLazy(t *testing.T) {
	ctx, _, g, sm := warmLazyGroup(t)
	var none LazyEntry
	if g.AppendLazy(none, []byte("x"), 1<<10) {
		t.Fatal("appended to no proposal")
	}
	e, err := g.ProposeLazyOpen([]byte("l=a"))
	if err != nil {
		t.Fatal(err)
	}
	if !g.AppendLazy(e, []byte("b"), 1<<10) || !g.AppendLazy(e, []byte("c"), 1<<10) {
		t.Fatal("AppendLazy refused a lazy proposal still waiting last in its queue")
	}
	if g.AppendLazy(e, make([]byte, 1<<10), 1<<10) {
		t.Fatal("AppendLazy grew a proposal past its bound")
	}
	// An eager proposal after it: what is appended now still goes into the lazy entry, which
	// applies first.
	f, err := g.Propose(ctx, []byte("k=z"))
	if err != nil {
		t.Fatal(err)
	}
	if !g.AppendLazy(e, []byte("d"), 1<<10) {
		t.Fatal("AppendLazy refused a waiting proposal with another one queued after it")
	}
	if _, err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := sm.get("l"); v != "abcd" {
		t.Fatalf("l = %q, want the lazy entry with its three appends (abcd)", v)
	}
	sm.mu.Lock()
	n := sm.Count
	sm.mu.Unlock()
	if n != 3 {
		t.Fatalf("%d entries applied, want 3 (warm, the lazy one with its appends, the eager one)", n)
	}
	// Taken by the host (and applied): nothing more goes into it.
	if g.AppendLazy(e, []byte("e"), 1<<10) {
		t.Fatal("AppendLazy extended a proposal the host had taken")
	}
}

// Extend appends to an eager proposal while it waits in its group's queue with nothing but lazy
// proposals behind it, so what it appended is applied in the same entry; an eager proposal
// queued after it, or the host taking it, closes it: Extend refuses and calls nothing.
func TestExtend(t *testing.T) {
	ctx, h, g, sm := warmLazyGroup(t)
	appendFn := func(s string) func([]byte) []byte {
		return func(b []byte) []byte { return append(b, s...) }
	}
	if g.Extend(OpenEntry{}, appendFn("x")) {
		t.Fatal("extended no proposal")
	}
	// Hold the host's loop so that the proposals below wait in the group's queue.
	running, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- h.do(ctx, func() error { close(running); <-release; return nil })
	}()
	<-running
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	type outcome struct {
		res any
		err error
	}
	got := make(chan outcome, 1)
	e, err := g.ProposeOpenInPlace(append(EntryBuffer(16), "o=a"...), func(res any, err error) { got <- outcome{res, err} })
	if err != nil {
		t.Fatal(err)
	}
	if !g.Extend(e, appendFn("b")) {
		t.Fatal("Extend refused a proposal waiting last in its queue")
	}
	if err := g.ProposeLazy([]byte("l=1"), nil); err != nil {
		t.Fatal(err)
	}
	if !g.Extend(e, appendFn("c")) {
		t.Fatal("Extend refused a proposal with only a lazy one behind it")
	}
	f, err := g.Propose(ctx, []byte("k=z"))
	if err != nil {
		t.Fatal(err)
	}
	if g.Extend(e, func(b []byte) []byte { t.Error("fn called behind an eager proposal"); return b }) {
		t.Fatal("Extend extended a proposal with an eager one behind it")
	}
	close(release)
	released = true
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	var o outcome
	select {
	case o = <-got:
	case <-ctx.Done():
		t.Fatal("no outcome for the extended proposal")
	}
	if n, _ := o.res.(uint64); o.err != nil || n != 2 {
		t.Fatalf("extended proposal: result %v, error %v; want the second entry applied", o.res, o.err)
	}
	if v, _ := sm.get("o"); v != "abc" {
		t.Fatalf("o = %q, want the entry with its two appends (abc)", v)
	}
	if v, _ := sm.get("k"); v != "z" {
		t.Fatalf("k = %q, want z", v)
	}
	if g.Extend(e, appendFn("d")) {
		t.Fatal("Extend extended a proposal the host had taken")
	}
}

// warmLazyGroup starts a host that holds lazy proposals for an hour and one group on it, elected
// and with a first entry applied (TestAppendLazy, TestExtend); everything stops at the test's end.
func warmLazyGroup(t *testing.T) (context.Context, *Host, *Group, *kv) {
	t.Helper()
	ctx := testContext(t)
	eng := openEngine(t, t.TempDir(), vfs.Default)
	t.Cleanup(func() { eng.Close() })
	h := startHost(t, Config{LazyProposalDelay: time.Hour}, eng)
	t.Cleanup(h.Stop)
	sm := newKV()
	g := addGroup(t, ctx, h, 1, sm)
	f, err := g.Propose(ctx, []byte("warm=1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx, h, g, sm
}
