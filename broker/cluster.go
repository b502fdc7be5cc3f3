package broker

import (
	"fmt"

	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/cluster"
)

// MetaGroup is the raft group of the durable metadata.
const MetaGroup = metaGroup

// DurableQueueGroups lists the raft groups of the durable queues named in a metadata entry of
// group 0 (what the broker writes there), so a node that does not serve the broker can keep
// replicas of every queue's group (cmd/parley's cluster glue).
func DurableQueueGroups(metaEntry []byte) ([]uint64, error) {
	if len(metaEntry) == 0 {
		return nil, nil
	}
	st, err := meta.Restore(metaEntry)
	if err != nil {
		return nil, fmt.Errorf("durable queue groups: %w", err)
	}
	var ids []uint64
	for _, v := range st.VHosts() {
		for _, def := range st.Queues(v) {
			if def.Durable {
				ids = append(ids, queueGroup(def))
			}
		}
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

// MetaStandIn is the state machine of a standby's replica of group 0: the same as the broker's
// (the last metadata written, which is all a snapshot holds), calling onChange on the host's
// loop with each metadata entry applied or snapshot restored, so the standby can follow the
// durable queues it must keep replicas of. onChange must not block.
func MetaStandIn(onChange func(metaEntry []byte)) cluster.StateMachine {
	return &metaStandIn{onChange: onChange}
}

type metaStandIn struct {
	metaLog
	onChange func([]byte)
}

func (m *metaStandIn) Apply(index uint64, data []byte) any {
	m.metaLog.Apply(index, data)
	m.onChange(data)
	return nil
}

func (m *metaStandIn) Restore(data []byte) error {
	if err := m.metaLog.Restore(data); err != nil {
		return err
	}
	m.onChange(data)
	return nil
}
