package cluster

import (
	"math/bits"
	"sync"
)

// Entry buffers. An entry proposed in place (Group.ProposeAsyncInPlace) is needed only until
// raft has its own copy, and a leader copies every entry it is handed (etcd raft clones each
// proposed entry in appendEntry) before Step returns. The host then gives the buffer back
// here (recycleEntry) for the next EntryBuffer, so on a leader a persistent message's log
// entry costs no allocation of its own: one body-sized allocation fewer per message, out of
// three (the body, the entry, raft's clone). A follower forwards the entries themselves to the
// leader, so their buffers are left to the garbage collector.
//
// Buffers come in power-of-two sizes from 512 bytes to 64 KiB; larger entries are allocated
// and collected as usual.
const (
	minEntryClass = 9  // 512 bytes
	maxEntryClass = 16 // 64 KiB
)

var entryBufs [maxEntryClass - minEntryClass + 1]sync.Pool

// entryClass returns the size class of a buffer of capacity n, ok false if none holds it.
func entryClass(n int) (int, bool) {
	if n <= 1<<minEntryClass {
		return 0, true
	}
	c := bits.Len(uint(n - 1))
	if c > maxEntryClass {
		return 0, false
	}
	return c - minEntryClass, true
}

// EntryBuffer returns a buffer for an entry of up to n bytes of data to propose with
// ProposeAsyncInPlace: its length is EntryHeaderRoom (the header's room), its capacity at
// least EntryHeaderRoom+n. It may have been used before; its contents past the length are
// not defined.
func EntryBuffer(n int) []byte {
	size := EntryHeaderRoom + n
	c, ok := entryClass(size)
	if !ok {
		return make([]byte, EntryHeaderRoom, size)
	}
	if p, _ := entryBufs[c].Get().(*[]byte); p != nil {
		return (*p)[:EntryHeaderRoom]
	}
	return make([]byte, EntryHeaderRoom, 1<<(c+minEntryClass))
}

// recycleEntry takes back an entry buffer nothing refers to any more. Only buffers of exactly
// a class's size are kept (an entry that outgrew its EntryBuffer has another capacity).
func recycleEntry(b []byte) {
	c, ok := entryClass(cap(b))
	if !ok || cap(b) != 1<<(c+minEntryClass) {
		return
	}
	b = b[:0]
	entryBufs[c].Put(&b)
}
