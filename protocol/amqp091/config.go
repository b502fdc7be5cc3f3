package amqp091

import "time"

// Config holds the AMQP listener's tunables. Start from DefaultConfig; a zero field means its
// default.
type Config struct {
	// FrameMax is the largest frame the server accepts and proposes in connection.tune.
	// Default 131072, as RabbitMQ.
	FrameMax uint32
	// ChannelMax is the most channels a connection may have open at once, proposed in
	// connection.tune. Default 2047, as RabbitMQ.
	ChannelMax uint16
	// Heartbeat is the interval the server proposes in connection.tune. The client's tune-ok
	// value is what is used (RabbitMQ does the same). Default 60s. Zero after DefaultConfig
	// means the server proposes no heartbeats.
	Heartbeat time.Duration
	// HandshakeTimeout bounds the time from accepting a socket to connection.open-ok.
	// Default 10s (RabbitMQ's handshake_timeout).
	HandshakeTimeout time.Duration
	// MaxMessageSize is the largest message body accepted; larger publishes get 406
	// PRECONDITION_FAILED. Default 128 MiB, RabbitMQ's max_message_size.
	MaxMessageSize uint64
	// Product and Version are the "product" and "version" server properties.
	// Defaults "Parley" and "0.0.0".
	Product, Version string
	// ClusterName is the "cluster_name" server property. Default "parley@" + hostname.
	ClusterName string
	// PublishFlowLimit is flow control for publishers (broker.FlowGate): a connection whose
	// publish reached a queue with more than this many ready messages, whose consumers could
	// take more but are held by their own connections' output, reads nothing more until the
	// queue is at half of it. Default 8192; negative turns it off.
	PublishFlowLimit int
}

// RabbitMQ's defaults (rabbit.app).
const (
	defaultFrameMax         = 131072
	defaultChannelMax       = 2047
	defaultHeartbeat        = 60 * time.Second
	defaultHandshakeTimeout = 10 * time.Second
	defaultMaxMessageSize   = 128 << 20
	defaultFlowLimit        = 8192
	// frameMinSize is AMQP 0-9-1 §4.2.1's frame-min-size: peers must accept frames this large.
	frameMinSize = 4096
)

// DefaultConfig returns the defaults documented on each Config field.
func DefaultConfig() Config {
	return Config{
		FrameMax:         defaultFrameMax,
		ChannelMax:       defaultChannelMax,
		Heartbeat:        defaultHeartbeat,
		HandshakeTimeout: defaultHandshakeTimeout,
		MaxMessageSize:   defaultMaxMessageSize,
		Product:          "Parley",
		Version:          "0.0.0",
		PublishFlowLimit: defaultFlowLimit,
	}
}

// withDefaults fills zero fields (Heartbeat excepted: zero disables it).
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.FrameMax == 0 {
		c.FrameMax = d.FrameMax
	}
	if c.FrameMax < frameMinSize {
		c.FrameMax = frameMinSize
	}
	if c.ChannelMax == 0 {
		c.ChannelMax = d.ChannelMax
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = d.MaxMessageSize
	}
	if c.Product == "" {
		c.Product = d.Product
	}
	if c.Version == "" {
		c.Version = d.Version
	}
	if c.PublishFlowLimit == 0 {
		c.PublishFlowLimit = d.PublishFlowLimit
	}
	return c
}
