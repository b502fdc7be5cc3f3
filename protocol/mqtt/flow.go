package mqtt

// Flow control for publishers is broker.FlowGate with OutputBound false: a publish that reached
// a queue with a consumer and more than Config.PublishFlowLimit ready messages stops the
// reader (conn.serve) until that queue is at half the limit. A subscriber takes what it is
// sent, so its queue growing means it cannot keep up. Before it, ten publishers and one
// subscriber had Parley read ten sockets as fast as they came while the subscriber's queue
// grew by tens of thousands of messages a second (run 11: in 106k/s, out 59k/s, p50 latency
// 6 s), and the CPU spent taking messages that only piled up, on two cores shared with the
// clients, was taken from the delivery. Mosquitto, single-threaded, shares one core between
// reading and writing. Nothing is dropped and QoS 0 is treated as QoS 1 (RabbitMQ's native
// MQTT instead drops QoS 0 messages for a subscriber whose mailbox is over
// mqtt.mailbox_soft_limit). The client's keep-alive is served: one wait lasts 2 s at most and
// its PINGREQ is read between two. A stalled subscriber turns it off for the session for 10 s.
