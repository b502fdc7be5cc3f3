package broker

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/cluster"
)

// blockSM is a state machine whose entry "block" holds the host's loop (every group's Ready
// cycle) until release is closed.
type blockSM struct{ entered, release chan struct{} }

func (s *blockSM) Apply(_ uint64, data []byte) any {
	if string(data) == "block" {
		close(s.entered)
		<-s.release
	}
	return nil
}
func (s *blockSM) Snapshot() ([]byte, error) { return nil, nil }
func (s *blockSM) Restore([]byte) error      { return nil }

// holdHost stops n's host loop in the apply of an entry of a group of its own and returns the
// function that lets it go (also called at the end of the test).
func holdHost(t *testing.T, n *node) (release func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sm := &blockSM{entered: make(chan struct{}), release: make(chan struct{})}
	g, err := n.host.AddGroup(ctx, 1<<62|77, sm)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.ProposeAsync([]byte("block"), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sm.entered:
	case <-ctx.Done():
		t.Fatal("the host's loop did not apply the blocking entry")
	}
	released := false
	release = func() {
		if !released {
			released = true
			close(sm.release)
		}
	}
	t.Cleanup(release)
	return release
}

// The persistent publishes of several inbox batches that reach the queue while its last enqueue
// entry still waits for the host go into that entry (cluster.Group.Extend): one log entry,
// every message confirmed once it commits, in publish order, each with its own slot, and all
// of them back after a restart.
func TestPublishesExtendWaitingEntry(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir)
	v, _ := n.b.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "ext", Durable: true}, false); err != nil {
		t.Fatal(err)
	}
	q, _ := v.Queue("ext", 0)
	release := holdHost(t, n)
	const batches, per = 5, 3
	confirmed := make(chan bool, batches*per)
	for b := range batches {
		for i := range per {
			m := persistent(deepBody(b*per + i))
			m.RoutingKey = "ext"
			if routed, err := v.Publish(m, func(ok bool) { confirmed <- ok }, nil); !routed || err != nil {
				t.Fatalf("publish %d: routed=%v err=%v", b*per+i, routed, err)
			}
		}
		// The queue has taken this batch (and proposed it) before the next one is posted.
		if got := q.CountedLen(); got != (b+1)*per {
			t.Fatalf("after batch %d the queue counts %d messages, want %d", b, got, (b+1)*per)
		}
	}
	select {
	case ok := <-confirmed:
		t.Fatalf("a publish was answered (%v) before its entry could be written", ok)
	default:
	}
	release()
	for i := range batches * per {
		select {
		case ok := <-confirmed:
			if !ok {
				t.Fatalf("publish nacked (%d answered before)", i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d publishes confirmed", i, batches*per)
		}
	}
	if entries, msgs := enqueueEntries(t, q); entries != 1 || msgs != batches*per {
		t.Fatalf("%d enqueue entries carrying %d messages, want 1 carrying %d", entries, msgs, batches*per)
	}
	for i := range 2 {
		d, _, ok := q.Get(true)
		if !ok || string(d.Msg.Body) != deepBody(i) || refSlot(d.Ref) != i {
			t.Fatalf("get %d: ok=%v slot %d body %.8s", i, ok, refSlot(d.Ref), d.Msg.Body)
		}
	}
	n.close()

	n = openNode(t, dir)
	defer n.close()
	v, _ = n.b.VHost("/")
	q, _ = v.Queue("ext", 0)
	for i := 2; i < batches*per; i++ {
		d, _, ok := q.Get(true)
		if !ok || string(d.Msg.Body) != deepBody(i) || refSlot(d.Ref) != i {
			t.Fatalf("get %d after restart: ok=%v slot %d body %.8s", i, ok, refSlot(d.Ref), d.Msg.Body)
		}
	}
	if d, _, ok := q.Get(true); ok {
		t.Fatalf("unexpected message %.8s", d.Msg.Body)
	}
}

// A batch entry's count is written padded to countLen bytes (appendCount), so that it can be
// raised in place: the decoder every build uses (encoding/binary's Uvarint) reads the padded
// count as the number it is, and an entry extended by appendBatch decodes, on the proposer
// (from memory) and on a replica (from its bytes), to the same records.
func TestQueueLogExtendedBatchEntry(t *testing.T) {
	for _, n := range []int{0, 1, 5, 127, 128, 16383, 16384, maxBatchMessages} {
		b := appendCount(nil, n)
		if got, used := binaryUvarint(b); used != countLen || got != uint64(n) {
			t.Fatalf("count %d padded to % x reads back as %d (%d bytes)", n, b, got, used)
		}
	}
	proposer := newQueueLog()
	entry, token, countAt, err := proposer.openBatchEntry(1000, batchOf("a", "bb"), true)
	if err != nil {
		t.Fatal(err)
	}
	if cap(entry) < extendableEntryBytes {
		t.Fatalf("an extendable entry has room for %d bytes, want %d", cap(entry), extendableEntryBytes)
	}
	var ps []*pendingPublish
	for _, m := range batchOf("ccc", "dddd") {
		ps = append(ps, &pendingPublish{m: m})
	}
	entry, err = proposer.appendBatch(entry, countAt, token, 2, ps)
	if err != nil {
		t.Fatal(err)
	}
	data := slices.Clone(entry[cluster.EntryHeaderRoom:])
	replica := newQueueLog()
	for _, l := range []*queueLog{proposer, replica} {
		if res := l.Apply(9, data); res != packRef(9, 0) {
			t.Fatalf("extended entry applied: %v", res)
		}
	}
	want := []liveRecord{
		{ref: packRef(9, 0), at: 1000, ttl: -1, size: 1}, {ref: packRef(9, 1), at: 1000, ttl: -1, size: 2},
		{ref: packRef(9, 2), at: 1000, ttl: -1, size: 3}, {ref: packRef(9, 3), at: 1000, ttl: -1, size: 4},
	}
	if !slices.Equal(proposer.live, want) || !slices.Equal(replica.live, want) {
		t.Fatalf("records:\nproposer %+v\nreplica  %+v\nwant     %+v", proposer.live, replica.live, want)
	}
	var bodies []string
	if err := decodeEnqueued(data, func(_ int, _ int64, m *message.Message) bool {
		bodies = append(bodies, string(m.Body))
		return true
	}); err != nil || !slices.Equal(bodies, []string{"a", "bb", "ccc", "dddd"}) {
		t.Fatalf("decoded %q, %v", bodies, err)
	}
}

func binaryUvarint(b []byte) (uint64, int) { return binary.Uvarint(b) }

// removeLocked finds a live record wherever it is, whatever its hint says: removals in order,
// interleaved as several consumers acknowledge, backwards, at random, twice, and of refs never
// live, across compactions of the tombstones.
func TestQueueLogRemoveOrders(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	orders := map[string]func(n int) []int{
		"in order": func(n int) []int { return seq(n) },
		"four consumers": func(n int) []int {
			out := seq(n)
			for i := 0; i+4 <= n; i += 4 {
				rng.Shuffle(4, func(a, b int) { out[i+a], out[i+b] = out[i+b], out[i+a] })
			}
			return out
		},
		"backwards": func(n int) []int { s := seq(n); slices.Reverse(s); return s },
		"random":    func(n int) []int { s := seq(n); rng.Shuffle(n, func(a, b int) { s[a], s[b] = s[b], s[a] }); return s },
	}
	for name, order := range orders {
		l := newQueueLog()
		const n = 500
		for i := range n {
			l.live = append(l.live, liveRecord{ref: packRef(uint64(10+i/7), i%7)})
		}
		live := map[uint64]bool{}
		for _, r := range l.live {
			live[r.ref] = true
		}
		for k, i := range order(n) {
			ref := packRef(uint64(10+i/7), i%7)
			if !l.removeLocked(ref) {
				t.Fatalf("%s: removal %d of live ref %x not found", name, k, ref)
			}
			delete(live, ref)
			if l.removeLocked(ref) || l.removeLocked(packRef(5, 0)) || l.removeLocked(packRef(1000, 3)) {
				t.Fatalf("%s: a ref removed twice or never live was found", name)
			}
			l.compactLiveLocked()
			left := 0
			for _, r := range l.live {
				if !r.gone {
					left++
					if !live[r.ref] {
						t.Fatalf("%s: ref %x live in the log, removed", name, r.ref)
					}
				}
			}
			if left != len(live) {
				t.Fatalf("%s: %d records live, want %d", name, left, len(live))
			}
		}
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
