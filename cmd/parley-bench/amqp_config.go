package main

import (
	"flag"
	"fmt"
	"io"
)

// amqpConfig is one AMQP workload. Every field maps to one flag; defaults are PerfTest's
// where it has one, so figures are comparable with what RabbitMQ users already measure.
type amqpConfig struct {
	common
	Queues      int // queues fed through the default exchange, producer i -> queue i%Queues
	Fanout      int // if > 0: one fanout exchange bound to Fanout queues, replaces Queues
	Persistent  bool
	Durable     bool
	QueueType   string // "" leaves x-queue-type unset (the broker's default)
	Confirm     int    // 0: no confirms; W: at most W unconfirmed messages per producer
	Prefetch    int    // 0: no basic.qos
	AutoAck     bool
	MultipleAck int
}

func parseAMQPFlags(args []string, stderr io.Writer) (amqpConfig, error) {
	var c amqpConfig
	fs := flag.NewFlagSet("parley-bench amqp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs, "amqp://guest:guest@127.0.0.1:5672/")
	fs.IntVar(&c.Queues, "queues", 1, "queues; producer i publishes to queue i%queues, consumer j consumes from queue j%queues")
	fs.IntVar(&c.Fanout, "fanout", 0, "if > 0, publish to one fanout exchange bound to this many queues (overrides -queues)")
	fs.BoolVar(&c.Persistent, "persistent", false, "publish with delivery-mode 2")
	fs.BoolVar(&c.Durable, "durable", false, "declare durable queues and exchange")
	fs.StringVar(&c.QueueType, "queue-type", "", "x-queue-type: classic or quorum (quorum implies -durable); empty leaves it unset")
	fs.IntVar(&c.Confirm, "confirm", 0, "publisher confirms with at most this many unconfirmed messages per producer (0 = off)")
	fs.IntVar(&c.Prefetch, "prefetch", 0, "basic.qos prefetch count per consumer (0 = unlimited)")
	fs.BoolVar(&c.AutoAck, "autoack", false, "consume with no-ack; otherwise ack manually")
	fs.IntVar(&c.MultipleAck, "multiple-ack", 1, "manual ack: ack every Nth delivery with multiple=true")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	return c, c.normalise()
}

// normalise fills derived defaults and rejects combinations that could only hang or lie.
func (c *amqpConfig) normalise() error {
	if _, err := c.common.normalise("amqp", "amqps"); err != nil {
		return err
	}
	switch {
	case c.Queues < 1:
		return badUsage("-queues must be >= 1")
	case c.Fanout < 0:
		return badUsage("-fanout must be >= 0")
	case c.Confirm < 0 || c.Prefetch < 0:
		return badUsage("-confirm and -prefetch must be >= 0")
	case c.MultipleAck < 1:
		return badUsage("-multiple-ack must be >= 1")
	case c.AutoAck && c.MultipleAck > 1:
		return badUsage("-multiple-ack needs manual acks; drop -autoack")
	case !c.AutoAck && c.Prefetch > 0 && c.MultipleAck > c.Prefetch:
		// The broker would stop delivering before the consumer reaches its ack threshold.
		return badUsage("-multiple-ack %d > -prefetch %d would stall on every batch", c.MultipleAck, c.Prefetch)
	}
	switch c.QueueType {
	case "", "classic":
	case "quorum":
		c.Durable = true // quorum queues are always durable; RabbitMQ refuses otherwise
	default:
		return badUsage("-queue-type %q: want classic or quorum", c.QueueType)
	}
	if c.Fanout > 0 {
		c.Queues = c.Fanout
	}
	if c.Consumers > 0 && c.Consumers < c.Queues {
		return badUsage("%d consumers for %d queues: every queue needs a consumer (or use -consumers 0)", c.Consumers, c.Queues)
	}
	return nil
}

// shape is a short human description of the workload for the report.
func (c *amqpConfig) shape() string {
	s := fmt.Sprintf("%dp/%dc", c.Producers, c.Consumers)
	if c.Fanout > 0 {
		s += fmt.Sprintf(" fanout->%dq", c.Fanout)
	} else {
		s += fmt.Sprintf(" %dq", c.Queues)
	}
	if c.QueueType != "" {
		s += " " + c.QueueType
	}
	s += fmt.Sprintf(" %dB", c.Size)
	if c.Persistent {
		s += " persistent"
	}
	if c.Durable {
		s += " durable"
	}
	if c.Confirm > 0 {
		s += fmt.Sprintf(" confirm=%d", c.Confirm)
	}
	if c.AutoAck {
		s += " autoack"
	} else {
		s += " ack"
		if c.MultipleAck > 1 {
			s += fmt.Sprintf("/%d", c.MultipleAck)
		}
	}
	if c.Prefetch > 0 {
		s += fmt.Sprintf(" qos=%d", c.Prefetch)
	}
	if c.Rate > 0 {
		s += fmt.Sprintf(" rate=%g", c.Rate)
	}
	return s
}
