package queue

import (
	"errors"
	"testing"

	"github.com/parleymq/parley/broker/message"
)

func TestConfigFromArgs(t *testing.T) {
	def := Config{Name: "q", MessageTTL: -1, MaxLength: -1, MaxLengthBytes: -1}
	with := func(f func(*Config)) Config { c := def; f(&c); return c }
	tests := []struct {
		name string
		args message.Table
		want Config
		err  string // RabbitMQ's detail, as seen on the reference broker; "" = accepted
	}{
		{"none", nil, def, ""},
		{"ignored args", message.Table{"x-expires": int32(5), "x-queue-type": "classic"}, def, ""},
		{"ttl int32", message.Table{"x-message-ttl": int32(1000)}, with(func(c *Config) { c.MessageTTL = 1000 }), ""},
		{"ttl int64", message.Table{"x-message-ttl": int64(1000)}, with(func(c *Config) { c.MessageTTL = 1000 }), ""},
		{"ttl uint8", message.Table{"x-message-ttl": uint8(5)}, with(func(c *Config) { c.MessageTTL = 5 }), ""},
		{"ttl uint32 max", message.Table{"x-message-ttl": uint32(4294967295)}, with(func(c *Config) { c.MessageTTL = 4294967295 }), ""},
		{"ttl zero", message.Table{"x-message-ttl": int16(0)}, with(func(c *Config) { c.MessageTTL = 0 }), ""},
		{"ttl negative", message.Table{"x-message-ttl": int32(-1)}, Config{}, "invalid arg 'x-message-ttl' for queue 'q': {value_negative,-1}"},
		{"ttl double", message.Table{"x-message-ttl": float64(1000)}, Config{}, `invalid arg 'x-message-ttl' for queue 'q': "expected integer, got double"`},
		{"ttl string", message.Table{"x-message-ttl": "1000"}, Config{}, `invalid arg 'x-message-ttl' for queue 'q': "expected integer, got longstr"`},
		{"ttl bool", message.Table{"x-message-ttl": true}, Config{}, `invalid arg 'x-message-ttl' for queue 'q': "expected integer, got bool"`},
		{"ttl bytes", message.Table{"x-message-ttl": []byte("1")}, Config{}, `invalid arg 'x-message-ttl' for queue 'q': "expected integer, got binary"`},
		{"max length", message.Table{"x-max-length": int32(10)}, with(func(c *Config) { c.MaxLength = 10 }), ""},
		{"max length negative", message.Table{"x-max-length": int64(-1)}, Config{}, "invalid arg 'x-max-length' for queue 'q': {value_negative,-1}"},
		{"max length bytes", message.Table{"x-max-length-bytes": uint16(100)}, with(func(c *Config) { c.MaxLengthBytes = 100 }), ""},
		{"max length bytes negative", message.Table{"x-max-length-bytes": int8(-1)}, Config{}, "invalid arg 'x-max-length-bytes' for queue 'q': {value_negative,-1}"},
		{"overflow reject", message.Table{"x-overflow": "reject-publish"}, with(func(c *Config) { c.Overflow = RejectPublish }), ""},
		{"overflow reject dlx", message.Table{"x-overflow": "reject-publish-dlx"}, with(func(c *Config) { c.Overflow = RejectPublishDLX }), ""},
		{"overflow drop", message.Table{"x-overflow": "drop-head"}, def, ""},
		{"overflow bad", message.Table{"x-overflow": "foo"}, Config{}, "invalid arg 'x-overflow' for queue 'q': invalid_overflow"},
		{"overflow int", message.Table{"x-overflow": int32(1)}, Config{}, "invalid arg 'x-overflow' for queue 'q': {unacceptable_type,signedint}"},
		{"max priority", message.Table{"x-max-priority": int32(10)}, with(func(c *Config) { c.MaxPriority = 10 }), ""},
		{"max priority 255", message.Table{"x-max-priority": int32(255)}, with(func(c *Config) { c.MaxPriority = 255 }), ""},
		{"max priority 256", message.Table{"x-max-priority": int32(256)}, Config{}, "invalid arg 'x-max-priority' for queue 'q': {max_value_exceeded,256}"},
		{"max priority negative", message.Table{"x-max-priority": int32(-1)}, Config{}, "invalid arg 'x-max-priority' for queue 'q': {value_negative,-1}"},
		{"dlx", message.Table{"x-dead-letter-exchange": "dlx"}, with(func(c *Config) { c.DeadLetterExchange, c.HasDeadLetterExchange = "dlx", true }), ""},
		{"dlx default exchange", message.Table{"x-dead-letter-exchange": ""}, with(func(c *Config) { c.HasDeadLetterExchange = true }), ""},
		{"dlx and key", message.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "k"},
			with(func(c *Config) {
				c.HasDeadLetterExchange, c.DeadLetterRoutingKey, c.HasDeadLetterRoutingKey = true, "k", true
			}), ""},
		{"key without dlx", message.Table{"x-dead-letter-routing-key": "k"}, Config{}, "invalid arg 'x-dead-letter-routing-key' for queue 'q': routing_key_but_no_dlx_defined"},
		{"dlx int", message.Table{"x-dead-letter-exchange": int32(0)}, Config{}, "invalid arg 'x-dead-letter-exchange' for queue 'q': {unacceptable_type,signedint}"},
		{"sac", message.Table{"x-single-active-consumer": true}, with(func(c *Config) { c.SingleActiveConsumer = true }), ""},
		{"sac int", message.Table{"x-single-active-consumer": int32(1)}, Config{}, "invalid arg 'x-single-active-consumer' for queue 'q': {unacceptable_type,signedint}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ConfigFromArgs("q", tt.args)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err || !errors.Is(err, ErrInvalidArg) {
					t.Fatalf("err = %v, want %q (ErrInvalidArg)", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
