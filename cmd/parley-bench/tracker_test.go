package main

import "testing"

func setOf(seqs ...uint64) *seqSet {
	s := &seqSet{}
	for _, q := range seqs {
		s.add(q)
	}
	return s
}

func TestSeqSet(t *testing.T) {
	s := &seqSet{}
	for _, q := range []uint64{0, 63, 64, 1000, 5} {
		if !s.add(q) {
			t.Fatalf("first add of %d reported present", q)
		}
	}
	if s.add(64) {
		t.Fatal("second add of 64 reported new")
	}
	if s.n != 5 || !s.has(1000) || s.has(999) || s.has(1<<20) {
		t.Fatalf("n=%d has(1000)=%v has(999)=%v", s.n, s.has(1000), s.has(999))
	}
	if got := setOf(1, 2).missingFrom(setOf(1, 2, 3, 200)); got != 2 {
		t.Fatalf("missing %d, want 2", got)
	}
}

func TestTrackerOutcomes(t *testing.T) {
	tr := NewTracker()
	steps := []struct {
		producer    uint32
		seq         uint64
		redelivered bool
		want        outcome
	}{
		{0, 0, false, firstCopy},
		{0, 1, false, firstCopy},
		{1, 0, false, firstCopy},      // same seq, other producer: a different message
		{0, 1, false, duplicateCopy},  // again without the flag: a duplicate
		{0, 0, true, redeliveredCopy}, // again with the flag: allowed, counted apart
		{0, 2, true, firstCopy},       // flagged but never seen: still its first delivery
	}
	for i, s := range steps {
		if got := tr.Record(s.producer, s.seq, s.redelivered); got != s.want {
			t.Fatalf("step %d: outcome %d, want %d", i, got, s.want)
		}
	}
	if tr.Unique() != 4 {
		t.Fatalf("unique %d, want 4", tr.Unique())
	}
}

func TestAccountLostDuplicatedUnexpected(t *testing.T) {
	tr := NewTracker()
	// Producer 0 published 0..9, producer 1 published 0..4 but 3 was nacked.
	expect := map[uint32]*seqSet{0: setOf(0, 1, 2, 3, 4, 5, 6, 7, 8, 9), 1: setOf(0, 1, 2, 4)}
	for _, q := range []uint64{0, 1, 2, 4, 5, 6, 7, 9} { // 3 and 8 lost
		tr.Record(0, q, false)
	}
	tr.Record(0, 5, false) // duplicate
	tr.Record(0, 6, true)  // redelivered copy
	tr.Record(0, 6, true)  // and again
	for _, q := range []uint64{0, 1, 2, 3, 4} {
		tr.Record(1, q, false) // 3 was nacked: delivered anyway, so unexpected, not lost
	}
	tr.Record(7, 0, false) // a producer this queue never heard of
	got := tr.Account(expect)
	want := Accounting{Expected: 14, Delivered: 14, Lost: 2, Duplicates: 1, Redelivered: 2, Unexpected: 2}
	if got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

// A producer that feeds the queue but none of whose messages arrived is all lost, and a
// fan-out run sums queue by queue.
func TestAccountSilentProducerAndSum(t *testing.T) {
	a := NewTracker()
	b := NewTracker()
	expect := map[uint32]*seqSet{0: setOf(0, 1, 2)}
	for _, q := range []uint64{0, 1, 2} {
		a.Record(0, q, false)
	}
	sum := a.Account(expect).Add(b.Account(expect))
	want := Accounting{Expected: 6, Delivered: 3, Lost: 3}
	if sum != want {
		t.Fatalf("got %+v, want %+v", sum, want)
	}
}
