// Package mqtt serves MQTT 3.1, 3.1.1 and 5.0 clients against Parley's core.
//
// Parley runs each connection itself (conn.go): it frames the client's bytes into packets
// (guardConn), reads the CONNECT, validates it, takes over a live connection with the same
// client id, answers CONNACK and applies the keep-alive, then hands each later packet to
// github.com/mochi-mqtt/server/v2's packet handling (Server.InjectPacket): its decoders and
// encoders, topic aliases on the way in, the inbound QoS 2 handshake and receive maximum,
// SUBSCRIBE, UNSUBSCRIBE and DISCONNECT handling. (This departs from DESIGN.md §3, which has
// mochi own the live connection: its connection loop cost an idle connection about 20 KiB of
// goroutine stacks.) The commonest packet, a QoS 0 or 1 PUBLISH without retain or topic alias
// while no inbound QoS 2 flow is open, skips mochi's processPublish: conn.publishDirect makes
// the checks mochi would and hands it to the bridge itself (publish.go; about 15 % of Parley's
// CPU in QoS 1 fan-in was mochi's bookkeeping for it). Every other PUBLISH, and every refused
// one, goes through mochi. Parley's core owns everything that must outlive a connection. A mochi
// Hook (Bridge, in hook.go) joins the two:
//
//   - A PUBLISH is turned into a core message on the exchange amq.topic (configurable) with
//     the topic as routing key ('/' and '.' swapped, as RabbitMQ's MQTT plugin does) and
//     published; the client's reader waits for the core to accept it before mochi sends
//     PUBACK or PUBREC (a QoS 1 publish whose queues are all transient and cannot refuse it is
//     accepted once it is in their inboxes: broker Queue.AcceptsAtOnce). mochi's own fan-out never runs: every publish is marked "ignore".
//   - A session is a queue, mqtt.s.<client-id>: durable for a persistent session (clean
//     session false, or an MQTT 5 session expiry), transient otherwise. Each subscription is
//     a binding of that queue to amq.topic ('+' -> '*', '#' -> '#'), with the subscription's
//     options (QoS, identifier, no-local, retain-as-published) in the binding's arguments so a
//     durable session's subscriptions survive a restart with the metadata.
//     $share/<group>/<filter> is one queue, mqtt.share.<group>.<filter>, with a consumer per
//     connected member (competing consumers). The queue lives as long as the group has a
//     member, connected or a persistent session that subscribed, and keeps the messages
//     published while none is connected (durable when a persistent session declared it); a
//     persistent session's shared subscriptions are kept with it and rejoined when it
//     connects again, also after a restart (share.go).
//   - What else a persistent session must keep (the connection's will, QoS 2 packet
//     identifiers between PUBREC and PUBREL/PUBCOMP, shared subscriptions, when it was left)
//     are state records of its queue, durable with it (durable.go). An inbound QoS 2 publish's
//     record is written before the message is published, and a crash between the two is
//     settled at the restart from the destination queues' logs (qos2in.go). A session expires (its
//     queue is deleted) its expiry interval after its connection ended, counted across
//     restarts: MQTT 5's own, Config.PersistentSessionExpiry for MQTT 3.1.1. The queue is
//     declared with it as x-expires; when a later CONNECT or a DISCONNECT changes it
//     [MQTT-3.1.2-23], the queue's expiry is changed in place (broker Queue.SetExpires, the
//     declared argument stays) and the new value kept in the "conn" record for a restart.
//   - mochi keeps no record of a client once its connection has ended: sessions are the
//     core's, and ever new client ids must not grow its maps.
//   - Each connection consumes its queues as a broker.Consumer whose credit is the client's
//     receive maximum. Deliveries go out through the session's writer goroutine with our own
//     packet identifiers; PUBACK (QoS 1) and PUBREC (QoS 2) settle the delivery in the core,
//     PUBCOMP releases the identifier. Unsettled deliveries go back to the queue when the
//     connection ends and come again (DUP set) to the session's next connection, under the
//     identifier they had: a persistent session stores it with the message before the
//     PUBLISH goes out, so this holds after a kill -9 too (packetids.go).
//
// Cost per connection (docs/performance.md, "Idle MQTT connection": about 8 KB while idle).
// DESIGN.md §2 gives each connection one reader and one writer goroutine; here an idle
// connection has one goroutine only, its reader, which waits for the next packet with a
// 2 KiB stack and no read buffer (guardConn) and does nothing else: the packets are handled
// on a deep goroutine that lives while the client is busy and ends once it has waited one to
// two ticks of the broker's idle clock (5 ms) for the next burst of packets (conn.go), and the
// session writer runs only while deliveries are pending (writer.go: it encodes a batch of
// PUBLISH packets into one buffer and writes them at once rather than one WritePacket, one
// buffer and one system call each). The PUBACKs a subscriber sends in one burst of packets are
// settled together, and what mochi writes while a burst is handled (the PUBACKs to a
// publisher, ...) goes out in one write at its end (guardConn.hold).
//
// Flow control (flow.go, broker.FlowGate; an addition to DESIGN.md §2, whose only back-pressure is a queue's
// full inbox, which the queue empties faster than its consumers do): a connection
// whose publish reached a queue with consumers and more than Config.PublishFlowLimit ready
// messages is not read again until that queue is at half the limit, unless its consumers take
// nothing for a second.
//
// The Server's Serve accepts on a listener; ServeConn serves one already accepted connection
// (the WebSocket gateway hands over connections for the "mqtt" subprotocol this way).
package mqtt
