package queue

import (
	"errors"
	"fmt"

	"github.com/parleymq/parley/broker/message"
)

// Overflow is the x-overflow behaviour once a queue reaches x-max-length or
// x-max-length-bytes (https://www.rabbitmq.com/docs/maxlength#overflow-behaviour).
type Overflow uint8

const (
	// DropHead drops (or dead-letters, reason maxlen) the oldest ready messages to make room.
	DropHead Overflow = iota
	// RejectPublish refuses the newest message; the publisher gets basic.nack with confirms.
	RejectPublish
	// RejectPublishDLX refuses the newest message and dead-letters it (reason maxlen).
	RejectPublishDLX
)

// String returns the x-overflow argument value.
func (o Overflow) String() string {
	switch o {
	case RejectPublish:
		return "reject-publish"
	case RejectPublishDLX:
		return "reject-publish-dlx"
	default:
		return "drop-head"
	}
}

// Config is a queue's behaviour, parsed from its x-* arguments. The zero value is not the
// default: use ConfigFromArgs, or set the -1 "none" values yourself.
type Config struct {
	Name                    string
	MessageTTL              int64 // x-message-ttl in ms; -1 = none
	MaxLength               int64 // x-max-length; -1 = none
	MaxLengthBytes          int64 // x-max-length-bytes (body bytes); -1 = none
	Overflow                Overflow
	DeadLetterExchange      string
	HasDeadLetterExchange   bool
	DeadLetterRoutingKey    string
	HasDeadLetterRoutingKey bool
	MaxPriority             uint8 // x-max-priority; 0 = not a priority queue
	SingleActiveConsumer    bool  // x-single-active-consumer
}

// ErrInvalidArg is the sentinel every ArgError matches with errors.Is.
var ErrInvalidArg = errors.New("invalid queue argument")

// ArgError is a queue argument RabbitMQ would refuse. Detail is RabbitMQ's own term for the
// problem (for example "{value_negative,-1}"), so the broker can build RabbitMQ's 406 text:
// "invalid arg 'x-max-length' for queue 'q' in vhost '/': {value_negative,-1}".
type ArgError struct {
	Queue  string
	Arg    string
	Detail string
}

func (e *ArgError) Error() string {
	return fmt.Sprintf("invalid arg '%s' for queue '%s': %s", e.Arg, e.Queue, e.Detail)
}

// Is makes errors.Is(err, ErrInvalidArg) true.
func (e *ArgError) Is(target error) bool { return target == ErrInvalidArg }

// ConfigFromArgs parses the queue arguments this package implements; others (x-expires,
// x-queue-type, ...) are ignored. Validation follows rabbit_amqqueue:check_arguments as
// observed on RabbitMQ 3.13/4.x: integers must use an AMQP integer type (a double or a string
// is refused as "expected integer, got double"), and must not be negative.
func ConfigFromArgs(name string, args message.Table) (Config, error) {
	cfg := Config{Name: name, MessageTTL: -1, MaxLength: -1, MaxLengthBytes: -1}
	argErr := func(arg, detail string) error { return &ArgError{Queue: name, Arg: arg, Detail: detail} }
	nonNegative := func(arg string) (int64, bool, error) {
		v, present := args[arg]
		if !present {
			return 0, false, nil
		}
		n, err := intArg(v)
		if err != nil {
			return 0, false, argErr(arg, err.Error())
		}
		if n < 0 {
			return 0, false, argErr(arg, fmt.Sprintf("{value_negative,%d}", n))
		}
		return n, true, nil
	}
	var err error
	var ok bool
	var n int64
	if n, ok, err = nonNegative("x-message-ttl"); err != nil {
		return Config{}, err
	} else if ok {
		cfg.MessageTTL = n
	}
	if n, ok, err = nonNegative("x-max-length"); err != nil {
		return Config{}, err
	} else if ok {
		cfg.MaxLength = n
	}
	if n, ok, err = nonNegative("x-max-length-bytes"); err != nil {
		return Config{}, err
	} else if ok {
		cfg.MaxLengthBytes = n
	}
	if n, ok, err = nonNegative("x-max-priority"); err != nil {
		return Config{}, err
	} else if ok {
		if n > 255 {
			return Config{}, argErr("x-max-priority", fmt.Sprintf("{max_value_exceeded,%d}", n))
		}
		cfg.MaxPriority = uint8(n)
	}
	if v, present := args["x-overflow"]; present {
		s, isStr := v.(string)
		if !isStr {
			return Config{}, argErr("x-overflow", fmt.Sprintf("{unacceptable_type,%s}", message.TypeName(v)))
		}
		switch s {
		case "drop-head":
			cfg.Overflow = DropHead
		case "reject-publish":
			cfg.Overflow = RejectPublish
		case "reject-publish-dlx":
			cfg.Overflow = RejectPublishDLX
		default:
			return Config{}, argErr("x-overflow", "invalid_overflow")
		}
	}
	if v, present := args["x-dead-letter-exchange"]; present {
		s, isStr := v.(string)
		if !isStr {
			// RabbitMQ words this one differently: "invalid type 'signedint' for arg ...".
			return Config{}, argErr("x-dead-letter-exchange", fmt.Sprintf("{unacceptable_type,%s}", message.TypeName(v)))
		}
		cfg.DeadLetterExchange, cfg.HasDeadLetterExchange = s, true
	}
	if v, present := args["x-dead-letter-routing-key"]; present {
		s, isStr := v.(string)
		if !isStr {
			return Config{}, argErr("x-dead-letter-routing-key", fmt.Sprintf("{unacceptable_type,%s}", message.TypeName(v)))
		}
		if !cfg.HasDeadLetterExchange {
			return Config{}, argErr("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
		}
		cfg.DeadLetterRoutingKey, cfg.HasDeadLetterRoutingKey = s, true
	}
	if v, present := args["x-single-active-consumer"]; present {
		b, isBool := v.(bool)
		if !isBool {
			return Config{}, argErr("x-single-active-consumer", fmt.Sprintf("{unacceptable_type,%s}", message.TypeName(v)))
		}
		cfg.SingleActiveConsumer = b
	}
	return cfg, nil
}

// intArg accepts every AMQP integer field type, as RabbitMQ does.
func intArg(v any) (int64, error) {
	if n, ok := message.Int(v); ok {
		return n, nil
	}
	return 0, fmt.Errorf("\"expected integer, got %s\"", message.TypeName(v))
}
