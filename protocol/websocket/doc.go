// Package websocket is Parley's one WebSocket gateway (github.com/coder/websocket): it serves
// HTTP(S) upgrades on a path ("/ws", where RabbitMQ's Web-STOMP and Web-MQTT plugins listen),
// checks the Origin, negotiates a subprotocol and hands the upgraded connection to the
// protocol adapter registered for that subprotocol, as a net.Conn.
//
// It knows nothing of the protocols: cmd/parley registers a Handler per subprotocol (STOMP's
// v10.stomp, v11.stomp, v12.stomp with text messages, one frame per message; MQTT's "mqtt"
// with binary messages), so this package imports neither protocol/stomp nor protocol/mqtt.
// Each Write on the handed-over net.Conn is one WebSocket message; Read returns the payloads
// of incoming messages one after the other.
package websocket
