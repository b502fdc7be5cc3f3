package mqtt

import "time"

// Config holds the MQTT listener's tunables. Start from DefaultConfig; a zero field means its
// default.
type Config struct {
	// Exchange is the topic exchange MQTT topics map onto. Default "amq.topic" (RabbitMQ's
	// mqtt.exchange).
	Exchange string
	// VHost is the virtual host MQTT clients use. Default "/" (RabbitMQ's mqtt.vhost).
	VHost string
	// MaxPacketSize is the largest packet accepted, advertised in CONNACK (MQTT 5). A larger
	// packet closes the connection. Default 16 MiB; never unbounded.
	MaxPacketSize uint32
	// MaxInflight bounds the QoS 1/2 deliveries a connection may have unacknowledged: the
	// consumer's credit is the client's receive maximum (MQTT 5) capped by this, or this for
	// MQTT 3.1.1, which has no receive maximum. Default 1024.
	MaxInflight uint16
	// ReceiveMaximum is the number of QoS 1/2 publishes a client may have unacknowledged
	// towards the server, advertised in CONNACK (MQTT 5). Default 1024.
	ReceiveMaximum uint16
	// AllowAnonymous lets a client without a user name log in as guest/guest (RabbitMQ's
	// mqtt.allow_anonymous with its default_user). Default true; guest is loopback-only.
	AllowAnonymous *bool
	// AnonymousUser and AnonymousPassword are the credentials an anonymous client logs in
	// with. Default guest/guest.
	AnonymousUser, AnonymousPassword string
	// MaxKeepAlive caps the keep-alive a client asks for; when it asks for more (or for none)
	// the server's value is sent back in CONNACK (MQTT 5 server keep-alive). 0 = accept the
	// client's. Default 0.
	MaxKeepAlive uint16
	// MaxSessionExpiry caps an MQTT 5 session expiry interval, in seconds. Default 0 = no cap
	// beyond the protocol's.
	MaxSessionExpiry uint32
	// PersistentSessionExpiry, in seconds, is how long an MQTT 3.1.1 (or 3.1) clean-session-
	// false session is kept after its connection ends, counted across restarts; it is then
	// deleted with its queued messages (MQTT 3.1.1 has no session expiry of its own; this is
	// Mosquitto's persistent_client_expiration). Default 0 = never, as Mosquitto's default.
	// A session keeps the expiry it was created with.
	PersistentSessionExpiry uint32
	// NodeID is this node's id in the cluster. A persistent session records the node that
	// serves its connection; the node that serves after a restart or a failover publishes the
	// will of a connection that ended with it, whichever node that was.
	NodeID string
	// ConnectTimeout bounds the time from accepting a socket to its CONNECT packet; a client
	// that sends nothing is closed then instead of holding a connection for ever. Default 10s
	// (RabbitMQ's handshake_timeout, as for AMQP and STOMP).
	ConnectTimeout time.Duration
	// PublishFlowLimit is flow control for publishers (flow.go): when a publish reaches a queue
	// that has a consumer and more than this many ready messages, the publishing connection
	// reads no further packet until that queue is down to half of it (or its consumer makes
	// no progress). Nothing is dropped: QoS 0 and QoS 1 publishers just wait, as Mosquitto's and
	// RabbitMQ's do when a queue outruns its consumers. Default 2048; negative turns it off.
	// (8192 until the second fan-in pass, docs/performance.md: a fan-in message's latency is
	// mostly its wait behind that backlog, and 2048 halved the QoS 1 p99 with the same
	// throughput. Mosquitto keeps at most max_queued_messages, 1000 by default, for a
	// subscriber and drops what comes beyond; this holds the publishers instead.)
	PublishFlowLimit int
}

// Defaults.
const (
	defaultExchange       = "amq.topic"
	defaultMaxPacketSize  = 16 << 20
	defaultMaxInflight    = 1024
	defaultReceiveMax     = 1024
	defaultConnectTimeout = 10 * time.Second
	defaultFlowLimit      = 2048
)

// DefaultConfig returns the defaults documented on each Config field.
func DefaultConfig() Config {
	yes := true
	return Config{
		Exchange:          defaultExchange,
		VHost:             "/",
		MaxPacketSize:     defaultMaxPacketSize,
		MaxInflight:       defaultMaxInflight,
		ReceiveMaximum:    defaultReceiveMax,
		AllowAnonymous:    &yes,
		AnonymousUser:     "guest",
		AnonymousPassword: "guest",
		ConnectTimeout:    defaultConnectTimeout,
		PublishFlowLimit:  defaultFlowLimit,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Exchange == "" {
		c.Exchange = d.Exchange
	}
	if c.VHost == "" {
		c.VHost = d.VHost
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = d.ConnectTimeout
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = d.MaxPacketSize
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = d.MaxInflight
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = d.ReceiveMaximum
	}
	if c.PublishFlowLimit == 0 {
		c.PublishFlowLimit = d.PublishFlowLimit
	}
	if c.AllowAnonymous == nil {
		c.AllowAnonymous = d.AllowAnonymous
	}
	if c.AnonymousUser == "" {
		c.AnonymousUser, c.AnonymousPassword = d.AnonymousUser, d.AnonymousPassword
	}
	return c
}
