// Package stomp is Parley's STOMP 1.0, 1.1 and 1.2 server adapter. It owns STOMP sessions:
// version negotiation, login, the host header as vhost, heart-beats, subscriptions and their
// ack modes (auto, client, client-individual), transactions (BEGIN/COMMIT/ABORT), receipts
// and the mapping of destinations onto the core, following RabbitMQ's STOMP plugin
// (https://www.rabbitmq.com/docs/stomp) so that its clients see the same frames and texts:
// /queue/, /topic/, /exchange/, /amq/queue/, /temp-queue/ and /reply-queue/.
//
// The frame codec lives in the wire subpackage. As in protocol/amqp091, each connection has
// one reader goroutine, which decodes frames and calls into the core, and one writer
// goroutine, which owns the socket's write side; queue goroutines delivering and publish
// confirms append encoded frames to the connection's buffer and wake the writer. A RECEIPT is
// written only after the core has accepted what the frame asked for: for SEND, after every
// queue the message reached has accepted it (for durable queues, fsynced by the log).
//
// The same sessions run over WebSocket (ServeConn with framed output: one frame per write,
// which the gateway in protocol/websocket turns into one WebSocket message).
//
// Flow control (conn.awaitFlow, broker.FlowGate, Config.PublishFlowLimit) works as the AMQP
// listener's: the reader stops after a SEND that reached a queue over the limit whose
// consumers' connections cannot take more, until it is at half of it.
package stomp
