// Package broker is Parley's protocol-agnostic core: vhosts, exchanges, bindings, queues,
// consumers and deliveries. Protocol adapters (protocol/amqp091, later MQTT and STOMP) call it;
// it never knows which protocol a client speaks.
//
// The logic lives in pure state machines (broker/meta for metadata, broker/queue for a queue,
// broker/exchange for routing). This package drives them:
//
//   - Metadata commands (declare, delete, bind) run under one mutex on the meta state machine;
//     after each change the vhost's routing snapshot (*exchange.Router) is swapped atomically, so
//     the publish path reads it without a lock.
//   - Each queue's state machine is owned by one goroutine fed by a bounded inbox. At each wake-up
//     it takes every command waiting as one batch, then runs the delivery step once and hands the
//     deliveries to the consumers. A full inbox blocks the publisher: back-pressure, never a drop.
//     A durable queue proposes the batch's persistent publishes as one log entry (queueentry.go).
//     Deviation from DESIGN.md §2 ("one Raft proposal" per batch): a batch of more than about
//     64 KiB of messages becomes several entries of up to 64 KiB each, which the host recycles
//     instead of allocating, and which keep a message's read-back small; the settlements of a
//     batch are one more entry (removals), and SettleWithState's state records their own.
//   - Consumers are callbacks (the Consumer interface) that must not block: an adapter appends the
//     delivery to its connection's write buffer and wakes its writer. One delivery round hands
//     out at most queue.MaxRoundBytes, so a consumer's connection refuses more (Allow) once its
//     output is full rather than after a whole backlog.
//   - Publisher flow control (flowgate.go, FlowGate), an addition to DESIGN.md §2, whose only
//     back-pressure is a full inbox (which the queue empties faster than its consumers take):
//     an adapter stops reading a publisher whose publish reached a queue over a limit whose
//     messages do not leave as fast as they come, as RabbitMQ's credit flow does.
//   - With Config.Spread (cluster.spread_queues, on by default), a durable queue may run on
//     another node: the *Queue here is then a proxy (remote.go) and the other node's broker
//     hosts the queue (queuehost.go), over the cluster's RPC channel. A queue's placement is
//     recorded with it in group 0 (meta.QueueDef.Place) and its group's leadership follows it:
//     the serving node moves a queue back to its placement when that node returns
//     (rebalance.go). remote.go lists the queues that are never spread and why.
//   - Small durable queues the adapters declare with meta.QueueDef.Packed (MQTT sessions and
//     shared subscriptions, durable STOMP topic subscriptions) share Config.PartitionGroups
//     partition groups (partition.go) instead of a group each; the choice is recorded in group
//     0 with the queue (DESIGN.md §5). Deviation from DESIGN.md §4's key layout: a partition
//     group's log entries carry a queue tag in front of the queue's own entry, and its snapshot
//     is the list of its queues' snapshots; the keys themselves are the same per group.
//
// Errors returned to adapters are *meta.Error values carrying RabbitMQ's reply code and text;
// adapters turn them into protocol errors at their edge.
package broker
