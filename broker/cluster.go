package broker

import (
	"fmt"

	"github.com/parleymq/parley/broker/meta"
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
				ids = append(ids, queueGroupID(v, def.Name))
			}
		}
	}
	return ids, nil
}
