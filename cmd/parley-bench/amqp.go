package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The AMQP mode: declare the topology on an admin connection, run the plan (engine.go) with
// one connection per producer and per consumer, then delete exactly what was declared.

func runAMQP(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseAMQPFlags(args, stderr)
	return runMode("amqp", &cfg.common, err, stdout, stderr, func(ctx context.Context) (*Result, error) {
		return benchAMQP(ctx, cfg, stderr)
	})
}

// topology names what one run declared, so it can delete exactly that.
type topology struct {
	exchange string // "" when publishing through the default exchange
	queues   []string
}

func dial(cfg amqpConfig, name string) (*amqp.Connection, error) {
	conn, _, err := dialWith(cfg, name, false)
	return conn, err
}

// dialCorked dials a connection whose socket writes the caller can coalesce (corkconn.go).
func dialCorked(cfg amqpConfig, name string) (*amqp.Connection, *corkConn, error) {
	return dialWith(cfg, name, true)
}

func dialWith(cfg amqpConfig, name string, corked bool) (*amqp.Connection, *corkConn, error) {
	var cork *corkConn
	d := amqp.DefaultDial(10 * time.Second)
	if corked {
		d = corkDial(d, func(c *corkConn) { cork = c })
	}
	conn, err := amqp.DialConfig(cfg.URL, amqp.Config{
		Heartbeat:  10 * time.Second,
		Locale:     "en_US",
		Dial:       d,
		Properties: amqp.Table{"connection_name": name, "product": "parley-bench"},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s as %q: %w", redactedURL(cfg.URL), name, err)
	}
	return conn, cork, nil
}

func declare(cfg amqpConfig, runID string) (topology, error) {
	var t topology
	conn, err := dial(cfg, "parley-bench admin")
	if err != nil {
		return t, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return t, fmt.Errorf("admin channel: %w", err)
	}
	var args amqp.Table
	if cfg.QueueType != "" {
		args = amqp.Table{"x-queue-type": cfg.QueueType}
	}
	if cfg.Fanout > 0 {
		t.exchange = "parley-bench-" + runID + "-fanout"
		if err := ch.ExchangeDeclare(t.exchange, amqp.ExchangeFanout, cfg.Durable, false, false, false, nil); err != nil {
			return t, fmt.Errorf("declare exchange %s: %w", t.exchange, err)
		}
	}
	for i := range cfg.Queues {
		name := fmt.Sprintf("parley-bench-%s-q%d", runID, i)
		if _, err := ch.QueueDeclare(name, cfg.Durable, false, false, false, args); err != nil {
			return t, fmt.Errorf("declare queue %s: %w", name, err)
		}
		t.queues = append(t.queues, name)
		if t.exchange != "" {
			if err := ch.QueueBind(name, "", t.exchange, false, nil); err != nil {
				return t, fmt.Errorf("bind %s to %s: %w", name, t.exchange, err)
			}
		}
	}
	return t, nil
}

// cleanup deletes what declare created on a fresh connection, with its own short bound:
// the run's context may already be cancelled, and leftovers would skew the next run.
func cleanup(cfg amqpConfig, t topology, stderr io.Writer) {
	if len(t.queues) == 0 && t.exchange == "" {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := dial(cfg, "parley-bench cleanup")
		if err != nil {
			fmt.Fprintf(stderr, "cleanup: %v\n", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			fmt.Fprintf(stderr, "cleanup: channel: %v\n", err)
			return
		}
		for _, q := range t.queues {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				fmt.Fprintf(stderr, "cleanup: delete queue %s: %v\n", q, err)
				if ch, err = conn.Channel(); err != nil {
					return
				}
			}
		}
		if t.exchange != "" {
			if err := ch.ExchangeDelete(t.exchange, false, false); err != nil {
				fmt.Fprintf(stderr, "cleanup: delete exchange %s: %v\n", t.exchange, err)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		fmt.Fprintln(stderr, "cleanup: gave up after 15s; queues named parley-bench-* may be left behind")
	}
}

func benchAMQP(ctx context.Context, cfg amqpConfig, stderr io.Writer) (*Result, error) {
	runID := newRunID()
	topo, err := declare(cfg, runID)
	defer cleanup(cfg, topo, stderr)
	if err != nil {
		return nil, err
	}
	nq := len(topo.queues)
	pl := plan{
		mode: "amqp", cfg: &cfg.common, shape: cfg.shape(), confirms: cfg.Confirm > 0,
		groups:  nq,
		groupOf: func(j int) int { return j % nq },
		owedTo: func(i int) []int {
			if cfg.Fanout > 0 {
				all := make([]int, nq)
				for q := range all {
					all[q] = q
				}
				return all
			}
			return []int{i % nq}
		},
		produce: func(ctx context.Context, p *producer, quota uint64, stop *atomic.Bool, ready func(), start <-chan struct{}) error {
			exchange, key := topo.exchange, ""
			if exchange == "" {
				key = topo.queues[int(p.id)%nq]
			}
			return amqpProduce(ctx, cfg, p, exchange, key, quota, stop, ready, start)
		},
		consume: func(ctx context.Context, c *consumer, t *Tracker, ready func()) error {
			return amqpConsume(ctx, cfg, c, topo.queues[c.id%nq], t, ready)
		},
	}
	return execute(ctx, pl, stderr)
}

// amqpProduce publishes on its own connection and channel, with confirms through a window
// when -confirm is set.
func amqpProduce(ctx context.Context, cfg amqpConfig, p *producer, exchange, key string, quota uint64,
	stop *atomic.Bool, ready func(), start <-chan struct{}) error {
	conn, cork, err := dialCorked(cfg, fmt.Sprintf("parley-bench producer %d", p.id))
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("producer %d: channel: %w", p.id, err)
	}

	// The broker confirms in publish order on a channel, and amqp091-go resequences multiple
	// acks into one Confirmation per tag, so tag-1 is the seq.
	w := newWindow(cfg.Confirm)
	var listenerDone chan struct{}
	if w != nil {
		if err := ch.Confirm(false); err != nil {
			return fmt.Errorf("producer %d: confirm.select: %w", p.id, err)
		}
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, cfg.Confirm))
		listenerDone = make(chan struct{})
		go func() {
			defer close(listenerDone)
			for c := range confirms {
				p.confirmed(c.DeliveryTag-1, c.Ack)
				w.release()
			}
		}()
	}

	ready()
	select {
	case <-start:
	case <-ctx.Done():
	}

	mode := amqp.Transient
	if cfg.Persistent {
		mode = amqp.Persistent
	}
	msg := amqp.Publishing{DeliveryMode: mode}
	p.flush = cork.flush
	pubErr := p.publishLoop(ctx, &cfg.common, quota, stop, w, func(_ uint64, body []byte) error {
		msg.Body = body
		return cork.hold(func() error {
			return ch.PublishWithContext(ctx, exchange, key, false, false, msg)
		})
	})
	if w != nil {
		if pubErr == nil {
			w.fill(ctx, cfg.Drain)
		}
		// Closing the channel closes the confirm stream, which ends the listener; only then
		// is expect safe to read.
		_ = ch.Close()
		<-listenerDone
	}
	return pubErr
}

func amqpConsume(ctx context.Context, cfg amqpConfig, c *consumer, queue string, t *Tracker, ready func()) error {
	conn, cork, err := dialCorked(cfg, fmt.Sprintf("parley-bench consumer %d", c.id))
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("consumer %d: channel: %w", c.id, err)
	}
	if cfg.Prefetch > 0 {
		if err := ch.Qos(cfg.Prefetch, 0, false); err != nil {
			return fmt.Errorf("consumer %d: basic.qos %d: %w", c.id, cfg.Prefetch, err)
		}
	}
	deliveries, err := ch.Consume(queue, fmt.Sprintf("parley-bench-c%d", c.id), cfg.AutoAck, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consumer %d: basic.consume %s: %w", c.id, queue, err)
	}
	ready()

	// With manual acks, an idle tick acks whatever is pending so the tail of a run (fewer
	// than -multiple-ack messages) is acked too and the broker's unacked count drains.
	idle := time.NewTicker(20 * time.Millisecond)
	defer idle.Stop()
	var pending int
	var lastTag uint64
	ackPending := func() error {
		if pending == 0 {
			return nil
		}
		pending = 0
		if err := ch.Ack(lastTag, true); err != nil {
			return fmt.Errorf("consumer %d: basic.ack %d: %w", c.id, lastTag, err)
		}
		return nil
	}
	// Acks are written in one go (corkconn.go) while deliveries keep arriving without a wait,
	// and flushed before the consumer waits for the next one, or after ackFlushEvery acks so
	// the broker's prefetch window keeps moving. Each is still its own basic.ack, with
	// multiple only when -multiple-ack asks for it.
	ackFlushEvery := 64
	if cfg.Prefetch > 0 {
		ackFlushEvery = max(1, min(ackFlushEvery, cfg.Prefetch/4))
	}
	var unflushed, received int
	flushAcks := func() error {
		unflushed = 0
		if err := cork.flush(); err != nil {
			return fmt.Errorf("consumer %d: basic.ack: %w", c.id, err)
		}
		return nil
	}
	defer func() { _ = cork.flush() }()
	for {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-deliveries:
		default:
			if unflushed > 0 {
				// amqp091-go hands each delivery through two goroutines; one yield lets a
				// delivery already read from the socket arrive before the acks are written,
				// which saves a write per few messages.
				runtime.Gosched()
				select {
				case d, ok = <-deliveries:
					goto got
				default:
				}
			}
			if err := flushAcks(); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				_ = ackPending()
				return nil
			case <-idle.C:
				if err := ackPending(); err != nil {
					return err
				}
				continue
			case d, ok = <-deliveries:
			}
		}
	got:
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("consumer %d: delivery stream closed by the broker", c.id)
		}
		// A stream that never pauses must still notice the end of the run.
		if received++; received%64 == 0 && ctx.Err() != nil {
			_ = ackPending()
			return nil
		}
		c.record(d.Body, d.Redelivered, t)
		if cfg.AutoAck {
			continue
		}
		pending++
		lastTag = d.DeliveryTag
		if pending < cfg.MultipleAck {
			continue
		}
		pending = 0
		if err := cork.hold(func() error { return ch.Ack(lastTag, cfg.MultipleAck > 1) }); err != nil {
			return fmt.Errorf("consumer %d: basic.ack %d: %w", c.id, lastTag, err)
		}
		if unflushed++; unflushed >= ackFlushEvery {
			if err := flushAcks(); err != nil {
				return err
			}
		}
	}
}
