package stomp

import (
	"time"

	"github.com/parleymq/parley/protocol/stomp/wire"
)

// Config holds the STOMP listener's tunables. Start from DefaultConfig; a zero field means its
// default.
type Config struct {
	// Limits bound each frame a client sends (header bytes, header count, body size). A frame
	// over a limit gets an ERROR frame and the connection is closed.
	Limits wire.Limits
	// HandshakeTimeout bounds the time from accepting a socket to its CONNECT frame.
	// Default 10s.
	HandshakeTimeout time.Duration
	// DefaultUser and DefaultPass are used when CONNECT carries no login header, as
	// RabbitMQ's default_user and default_pass (guest/guest). An empty DefaultUser makes the
	// login header mandatory.
	DefaultUser, DefaultPass string
	// DefaultVHost is the vhost when CONNECT has no host header. Default "/".
	DefaultVHost string
	// Product and Version make the CONNECTED frame's server header ("Parley/0.1.0").
	Product, Version string
	// PublishFlowLimit is flow control for publishers (broker.FlowGate), as the AMQP
	// listener's: a connection whose SEND reached a queue with more than this many ready
	// messages, whose consumers could take more but are held by their own connections'
	// output, reads no further frame until the queue is at half of it. Default 8192; negative
	// turns it off.
	PublishFlowLimit int
}

// DefaultConfig returns the defaults documented on each Config field.
func DefaultConfig() Config {
	return Config{
		Limits:           wire.DefaultLimits(),
		HandshakeTimeout: 10 * time.Second,
		DefaultUser:      "guest",
		DefaultPass:      "guest",
		DefaultVHost:     "/",
		Product:          "Parley",
		Version:          "0.0.0",
		PublishFlowLimit: 8192,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	if c.DefaultVHost == "" {
		c.DefaultVHost = d.DefaultVHost
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

// RabbitMQ's STOMP limits on transactions (rabbit_stomp_processor ?MAX_TRANSACTIONS,
// ?MAX_TRANSACTION_ACTIONS).
const (
	maxTransactions       = 16
	maxTransactionActions = 1024
)
