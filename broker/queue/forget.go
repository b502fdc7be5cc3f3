package queue

// Forget drops the ready messages whose reference is in refs, without effects: the driver's
// log says they left the queue for good through entries the driver never saw one by one (a
// durable queue's group installed a snapshot from its leader while the queue ran), so there
// is nothing to remove or dead-letter. A message of refs that is delivered and unacknowledged
// stays so; settling it does what it would have. It returns how many it dropped, and costs a
// pass over the ready messages.
func (q *Queue) Forget(refs map[uint64]bool) int {
	dropped := 0
	for l := range q.levels {
		r := &q.levels[l]
		n := r.len()
		if n == 0 {
			continue
		}
		for range n {
			e := r.popFront()
			if e.ref == 0 || !refs[e.ref] {
				r.pushBack(e)
				continue
			}
			dropped++
			q.ready--
			q.bytes -= int64(e.size)
			if e.expiry != noExpiry {
				q.withTTL--
			}
		}
		if r.len() == 0 {
			q.nonEmpty[l>>6] &^= 1 << (l & 63)
		}
	}
	return dropped
}
