// Package amqp091 is Parley's AMQP 0-9-1 server adapter: it turns client connections into calls
// on the core (package broker) and the core's deliveries back into frames, behaving on the wire
// exactly as RabbitMQ does (same server properties, reply codes, reply texts and ordering).
//
// It owns the connection state machine (protocol header, SASL, tune, open, heartbeats, close
// handshakes, connection.blocked), the channel state machine (open/close, content assembly,
// exchange.*, queue.*, basic.*, confirm.*, tx.*), consumers and their prefetch credit, delivery
// tags and unacknowledged deliveries, publisher confirms and the mapping of core errors onto
// channel and connection exceptions. The frame and method codec lives in the wire subpackage.
//
// Each connection has exactly two goroutines: a reader, which decodes frames and calls into the
// core, and a writer, which owns the socket's write side. Everyone else (queue goroutines
// delivering, confirm callbacks) appends encoded frames to the connection's write buffer under
// a mutex and wakes the writer, which writes everything pending in one call (coalescing).
// There is no goroutine per channel. Lock order is written at the top of channel.go.
//
// Flow control (conn.awaitFlow, broker.FlowGate, Config.PublishFlowLimit): the reader stops
// after a publish that reached a queue over the limit whose consumers could take more but
// whose connections' output is full, until the queue is at half of it; consumers held by their
// prefetch never hold a publisher back. RabbitMQ gets the same from credit flow. It is an
// addition to DESIGN.md §2, whose only back-pressure is a queue's full inbox.
package amqp091
