package main

import (
	"math/bits"
	"sync"
)

// seqSet is a growable bitmap of sequence numbers. Producers number their messages densely
// from zero, so a bitmap costs one bit per message: ten million messages is 1.25 MB.
type seqSet struct {
	words []uint64
	n     uint64 // number of bits set
}

// add sets bit s and reports whether it was clear before.
func (b *seqSet) add(s uint64) bool {
	w := s / 64
	if w >= uint64(len(b.words)) {
		grown := make([]uint64, max(w+1, uint64(2*len(b.words))))
		copy(grown, b.words)
		b.words = grown
	}
	mask := uint64(1) << (s % 64)
	if b.words[w]&mask != 0 {
		return false
	}
	b.words[w] |= mask
	b.n++
	return true
}

func (b *seqSet) has(s uint64) bool {
	w := s / 64
	return w < uint64(len(b.words)) && b.words[w]&(uint64(1)<<(s%64)) != 0
}

// missingFrom counts the members of want that are not in b.
func (b *seqSet) missingFrom(want *seqSet) uint64 {
	var miss uint64
	for i, w := range want.words {
		var got uint64
		if i < len(b.words) {
			got = b.words[i]
		}
		miss += uint64(bits.OnesCount64(w &^ got))
	}
	return miss
}

// outcome classifies one consumed message.
type outcome int

const (
	firstCopy       outcome = iota // never seen on this queue before
	duplicateCopy                  // seen before and not flagged redelivered: a broker bug
	redeliveredCopy                // seen before and flagged redelivered: allowed by AMQP
)

// Tracker records which messages one queue has delivered, per producer, so the run can count
// messages lost (expected but never delivered) and duplicated (delivered twice without the
// redelivered flag). Competing consumers of one queue share its Tracker, hence the mutex.
type Tracker struct {
	mu          sync.Mutex
	seen        map[uint32]*seqSet
	unique      uint64
	duplicates  uint64
	redelivered uint64 // copies seen again with the redelivered flag
	flagged     uint64 // every delivery carrying the redelivered flag, first copies included
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker { return &Tracker{seen: make(map[uint32]*seqSet)} }

// Record notes that producer's message seq was delivered, with or without the redelivered flag.
func (t *Tracker) Record(producer uint32, seq uint64, redelivered bool) outcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.seen[producer]
	if s == nil {
		s = &seqSet{}
		t.seen[producer] = s
	}
	if redelivered {
		t.flagged++
	}
	if s.add(seq) {
		t.unique++
		return firstCopy
	}
	if redelivered {
		t.redelivered++
		return redeliveredCopy
	}
	t.duplicates++
	return duplicateCopy
}

// Unique is the number of distinct messages delivered so far.
func (t *Tracker) Unique() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.unique
}

// Accounting is the loss and duplication summary of one or more queues.
type Accounting struct {
	Expected    uint64 `json:"expected"`    // messages that should have been delivered
	Delivered   uint64 `json:"delivered"`   // distinct messages delivered
	Lost        uint64 `json:"lost"`        // expected but never delivered
	Duplicates  uint64 `json:"duplicates"`  // delivered again without the redelivered flag
	Redelivered uint64 `json:"redelivered"` // delivered again with the redelivered flag
	Unexpected  uint64 `json:"unexpected"`  // delivered but never published (or nacked/unconfirmed)
}

// Add sums two accountings.
func (a Accounting) Add(b Accounting) Accounting {
	return Accounting{
		Expected:    a.Expected + b.Expected,
		Delivered:   a.Delivered + b.Delivered,
		Lost:        a.Lost + b.Lost,
		Duplicates:  a.Duplicates + b.Duplicates,
		Redelivered: a.Redelivered + b.Redelivered,
		Unexpected:  a.Unexpected + b.Unexpected,
	}
}

// Account compares what the queue delivered against expect: for each producer that feeds
// the queue, the set of sequence numbers it published (or, with confirms, had confirmed).
func (t *Tracker) Account(expect map[uint32]*seqSet) Accounting {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := Accounting{Delivered: t.unique, Duplicates: t.duplicates, Redelivered: t.redelivered}
	empty := &seqSet{}
	for p, want := range expect {
		a.Expected += want.n
		got := t.seen[p]
		if got == nil {
			got = empty
		}
		a.Lost += got.missingFrom(want)
	}
	for p, got := range t.seen {
		want := expect[p]
		if want == nil {
			want = empty
		}
		a.Unexpected += want.missingFrom(got)
	}
	return a
}
