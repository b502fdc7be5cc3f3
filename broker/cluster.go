package broker

import (
	"fmt"

	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/cluster"
)

// MetaGroup is the raft group of the durable metadata.
const MetaGroup = metaGroup

// durableQueueGroups lists the raft groups of the durable queues group 0's records name: each
// queue's own group, and once each partition group a queue is packed into.
func durableQueueGroups(rs *meta.RecordSet) ([]uint64, error) {
	qs, err := rs.DurableQueues()
	if err != nil {
		return nil, fmt.Errorf("durable queue groups: %w", err)
	}
	ids := make([]uint64, 0, len(qs))
	var parts map[uint64]bool
	for _, def := range qs {
		if def.Partition != 0 {
			if parts[def.Partition] {
				continue
			}
			if parts == nil {
				parts = map[uint64]bool{}
			}
			parts[def.Partition] = true
		}
		ids = append(ids, queueGroup(def))
	}
	return ids, nil
}

// QueueStandIn is the state machine a node that does not serve the broker gives its replica of
// a durable queue's group (cluster.Host.AddReplica): the queue's own log state machine, which is
// pure. It applies every committed entry to the queue's live records but delivers nothing, so
// the replica snapshots and compacts its log exactly as the serving node does (consumed
// messages leave the standby's disk too), and when the node takes the queue over, the broker's
// queue starts from the snapshots it took.
func QueueStandIn() cluster.StateMachine { return newQueueLog() }

// MetaStandIn is the state machine of a standby's replica of group 0: the broker's own (the
// metadata's records, applying each entry's changes), which also tells the standby which
// durable queues it must keep replicas of. It calls onChange on the host's loop with the raft
// groups of every durable queue the records name, after each entry that may have changed a
// queue's record, after the first entry it applies (the standby then knows the whole list) and
// after each snapshot restored; with an error (and no groups) for an entry it cannot read.
// Other entries (a retained message, a binding) do not call it. onChange must not block.
func MetaStandIn(onChange func(queueGroups []uint64, err error)) cluster.StateMachine {
	return &metaStandIn{metaLog: newMetaLog(), onChange: onChange}
}

type metaStandIn struct {
	*metaLog
	onChange func([]uint64, error)
	told     bool // onChange was given a list
}

func (m *metaStandIn) Apply(_ uint64, data []byte) any {
	m.mu.Lock()
	queues, err := m.apply(data)
	queues = queues || !m.told
	var ids []uint64
	if err == nil && queues {
		ids, err = durableQueueGroups(m.recs)
	}
	m.mu.Unlock()
	if err != nil {
		m.onChange(nil, err)
		return err
	}
	if queues {
		m.told = true
		m.onChange(ids, nil)
	}
	return nil
}

func (m *metaStandIn) Restore(data []byte) error {
	if err := m.metaLog.Restore(data); err != nil {
		return err
	}
	m.mu.Lock()
	ids, err := durableQueueGroups(m.recs)
	m.mu.Unlock()
	m.told = err == nil
	m.onChange(ids, err)
	return nil
}
