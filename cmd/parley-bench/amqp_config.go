package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"time"
)

// amqpConfig is one AMQP workload. Every field maps to one flag; defaults are PerfTest's
// where it has one, so figures are comparable with what RabbitMQ users already measure.
type amqpConfig struct {
	URL         string
	Label       string
	Producers   int
	Consumers   int
	Queues      int // queues fed through the default exchange, producer i -> queue i%Queues
	Fanout      int // if > 0: one fanout exchange bound to Fanout queues, replaces Queues
	Size        int
	Persistent  bool
	Durable     bool
	QueueType   string // "" leaves x-queue-type unset (the broker's default)
	Confirm     int    // 0: no confirms; W: at most W unconfirmed messages per producer
	Prefetch    int    // 0: no basic.qos
	AutoAck     bool
	MultipleAck int
	Duration    time.Duration
	Count       uint64 // total messages over all producers; 0: no limit
	Rate        float64
	Drain       time.Duration
	Timeout     time.Duration
	Progress    time.Duration
	JSON        bool
	CPUProfile  string
}

var errUsage = errors.New("usage")

func parseAMQPFlags(args []string, stderr io.Writer) (amqpConfig, error) {
	var c amqpConfig
	fs := flag.NewFlagSet("parley-bench amqp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.URL, "url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL")
	fs.StringVar(&c.Label, "label", "", "name of this run in the report (default: the broker's host:port)")
	fs.IntVar(&c.Producers, "producers", 1, "producer connections")
	fs.IntVar(&c.Consumers, "consumers", 1, "consumer connections (at least one per queue, or 0 to only publish)")
	fs.IntVar(&c.Queues, "queues", 1, "queues; producer i publishes to queue i%queues, consumer j consumes from queue j%queues")
	fs.IntVar(&c.Fanout, "fanout", 0, "if > 0, publish to one fanout exchange bound to this many queues (overrides -queues)")
	fs.IntVar(&c.Size, "size", 1024, fmt.Sprintf("message body size in bytes (at least %d, the accounting header)", headerLen))
	fs.BoolVar(&c.Persistent, "persistent", false, "publish with delivery-mode 2")
	fs.BoolVar(&c.Durable, "durable", false, "declare durable queues and exchange")
	fs.StringVar(&c.QueueType, "queue-type", "", "x-queue-type: classic or quorum (quorum implies -durable); empty leaves it unset")
	fs.IntVar(&c.Confirm, "confirm", 0, "publisher confirms with at most this many unconfirmed messages per producer (0 = off)")
	fs.IntVar(&c.Prefetch, "prefetch", 0, "basic.qos prefetch count per consumer (0 = unlimited)")
	fs.BoolVar(&c.AutoAck, "autoack", false, "consume with no-ack; otherwise ack manually")
	fs.IntVar(&c.MultipleAck, "multiple-ack", 1, "manual ack: ack every Nth delivery with multiple=true")
	fs.DurationVar(&c.Duration, "duration", 0, "how long to publish (default 10s unless -count is given)")
	fs.Uint64Var(&c.Count, "count", 0, "total messages to publish over all producers (0 = until -duration)")
	fs.Float64Var(&c.Rate, "rate", 0, "total publish rate in msgs/s over all producers, latency measured from each message's scheduled send time (0 = as fast as possible)")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "after publishing, wait this long without progress for consumers to catch up")
	fs.DurationVar(&c.Timeout, "timeout", 0, "hard bound on the whole run (default: duration + drain + 30s, or 10m with -count only)")
	fs.DurationVar(&c.Progress, "progress", time.Second, "progress line interval on stderr (0 = quiet)")
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON instead of a table")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the load generator's own CPU profile here, to see whether it is the bottleneck")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return c, c.normalise()
}

// normalise fills derived defaults and rejects combinations that could only hang or lie.
func (c *amqpConfig) normalise() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") {
		return bad("-url %q: want amqp://user:pass@host:port/vhost", c.URL)
	}
	if c.Label == "" {
		c.Label = u.Host
	}
	switch {
	case c.Producers < 0 || c.Consumers < 0:
		return bad("-producers and -consumers must be >= 0")
	case c.Producers == 0 && c.Consumers == 0:
		return bad("nothing to do: -producers 0 and -consumers 0")
	case c.Queues < 1:
		return bad("-queues must be >= 1")
	case c.Fanout < 0:
		return bad("-fanout must be >= 0")
	case c.Confirm < 0 || c.Prefetch < 0 || c.Rate < 0:
		return bad("-confirm, -prefetch and -rate must be >= 0")
	case c.MultipleAck < 1:
		return bad("-multiple-ack must be >= 1")
	case c.AutoAck && c.MultipleAck > 1:
		return bad("-multiple-ack needs manual acks; drop -autoack")
	case !c.AutoAck && c.Prefetch > 0 && c.MultipleAck > c.Prefetch:
		// The broker would stop delivering before the consumer reaches its ack threshold.
		return bad("-multiple-ack %d > -prefetch %d would stall on every batch", c.MultipleAck, c.Prefetch)
	case c.Size > 128<<20:
		return bad("-size above 128 MiB")
	case c.Duration < 0 || c.Drain < 0 || c.Timeout < 0 || c.Progress < 0:
		return bad("durations must be >= 0")
	}
	switch c.QueueType {
	case "", "classic":
	case "quorum":
		c.Durable = true // quorum queues are always durable; RabbitMQ refuses otherwise
	default:
		return bad("-queue-type %q: want classic or quorum", c.QueueType)
	}
	if c.Size < headerLen {
		c.Size = headerLen
	}
	if c.Fanout > 0 {
		c.Queues = c.Fanout
	}
	if c.Consumers > 0 && c.Consumers < c.Queues {
		return bad("%d consumers for %d queues: every queue needs a consumer (or use -consumers 0)", c.Consumers, c.Queues)
	}
	if c.Duration == 0 && c.Count == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Timeout == 0 {
		if c.Duration > 0 {
			c.Timeout = c.Duration + c.Drain + 30*time.Second
		} else {
			c.Timeout = 10 * time.Minute
		}
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

// redactedURL hides the password so reports can be pasted anywhere.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable url)"
	}
	return u.Redacted()
}
