package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The AMQP run, in order: declare the topology on an admin connection; start every consumer
// (each on its own connection, as PerfTest does, so one slow socket cannot hide another);
// start the producers; stop publishing at -duration or -count; wait for outstanding confirms;
// wait for the consumers to drain what was accepted; then account and delete the topology.
// One context carries the -timeout bound and SIGINT/SIGTERM, so every step is bounded.

func runAMQP(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseAMQPFlags(args, stderr)
	if err != nil {
		if errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "parley-bench amqp: %v\n", err)
			return exitUsage
		}
		return exitFailed
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			fmt.Fprintf(stderr, "parley-bench amqp: -cpuprofile: %v\n", err)
			return exitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "parley-bench amqp: -cpuprofile: %v\n", err)
			return exitFailed
		}
		defer pprof.StopCPUProfile()
	}
	res, err := benchAMQP(ctx, cfg, stderr)
	if res != nil {
		if werr := writeResult(stdout, res, cfg.JSON); werr != nil {
			fmt.Fprintf(stderr, "parley-bench amqp: writing result: %v\n", werr)
			return exitFailed
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "parley-bench amqp: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// topology names what one run declared, so it can delete exactly that.
type topology struct {
	exchange string // "" when publishing through the default exchange
	queues   []string
}

func dial(cfg amqpConfig, name string) (*amqp.Connection, error) {
	conn, err := amqp.DialConfig(cfg.URL, amqp.Config{
		Heartbeat:  10 * time.Second,
		Locale:     "en_US",
		Dial:       amqp.DefaultDial(10 * time.Second),
		Properties: amqp.Table{"connection_name": name, "product": "parley-bench"},
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s as %q: %w", redactedURL(cfg.URL), name, err)
	}
	return conn, nil
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

// clock is the run's monotonic epoch: send stamps and receive times are both offsets from
// it, so latency never depends on wall-clock steps.
type clock struct{ epoch time.Time }

func (c clock) now() int64 { return int64(time.Since(c.epoch)) }

type producer struct {
	id        uint32
	queue     int // index of the queue it feeds (queues mode)
	published atomic.Uint64
	acked     atomic.Uint64
	nacked    atomic.Uint64
	lastEvent atomic.Int64 // clock time of the last publish, or last confirm with confirms
	// expect is what consumers must deliver: every published seq, or only acked ones with
	// confirms. Written by the producer (or its confirm listener) and read after both exit.
	expect seqSet
	err    error
}

type consumer struct {
	id       int
	queue    int
	consumed atomic.Uint64
	foreign  atomic.Uint64
	lastRecv atomic.Int64
	hist     Histogram
	err      error
}

func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func benchAMQP(ctx context.Context, cfg amqpConfig, stderr io.Writer) (*Result, error) {
	runID := newRunID()
	topo, err := declare(cfg, runID)
	defer cleanup(cfg, topo, stderr)
	if err != nil {
		return nil, err
	}

	trackers := make([]*Tracker, len(topo.queues))
	for i := range trackers {
		trackers[i] = NewTracker()
	}
	clk := clock{epoch: time.Now()}

	// Consumers first, all subscribed before the first publish, so no message waits for a
	// consumer that is still connecting and the latency figures measure the broker.
	consumers := make([]*consumer, cfg.Consumers)
	consCtx, stopConsumers := context.WithCancel(ctx)
	defer stopConsumers()
	var consWG sync.WaitGroup
	ready := make(chan error, cfg.Consumers)
	for j := range consumers {
		c := &consumer{id: j, queue: j % len(topo.queues)}
		consumers[j] = c
		consWG.Add(1)
		go func() {
			defer consWG.Done()
			c.err = c.run(consCtx, cfg, topo.queues[c.queue], trackers[c.queue], clk, ready)
		}()
	}
	for range consumers {
		select {
		case err := <-ready:
			if err != nil {
				stopConsumers()
				consWG.Wait()
				return nil, err
			}
		case <-ctx.Done():
			stopConsumers()
			consWG.Wait()
			return nil, fmt.Errorf("waiting for consumers to subscribe: %w", ctx.Err())
		}
	}

	// Producers connect first too, and all start on one signal, so connection set-up is
	// outside the measured window and -duration is publishing time.
	producers := make([]*producer, cfg.Producers)
	var stopPublishing atomic.Bool
	var prodWG sync.WaitGroup
	prodReady := make(chan error, cfg.Producers)
	startSignal := make(chan struct{})
	for i := range producers {
		p := &producer{id: uint32(i), queue: i % len(topo.queues)}
		producers[i] = p
		quota := uint64(0)
		if cfg.Count > 0 {
			quota = cfg.Count / uint64(cfg.Producers)
			if uint64(i) < cfg.Count%uint64(cfg.Producers) {
				quota++
			}
		}
		exchange, key := topo.exchange, ""
		if exchange == "" {
			key = topo.queues[p.queue]
		}
		prodWG.Add(1)
		go func() {
			defer prodWG.Done()
			p.err = p.run(ctx, cfg, exchange, key, quota, &stopPublishing, clk, prodReady, startSignal)
		}()
	}
	for range producers {
		var err error
		select {
		case err = <-prodReady:
		case <-ctx.Done():
			err = fmt.Errorf("waiting for producers to connect: %w", ctx.Err())
		}
		if err != nil {
			stopPublishing.Store(true)
			close(startSignal)
			stopConsumers()
			prodWG.Wait()
			consWG.Wait()
			return nil, err
		}
	}
	start := clk.now()
	close(startSignal)

	prodDone := make(chan struct{})
	go func() { prodWG.Wait(); close(prodDone) }()
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.Progress > 0 {
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			reportProgress(stderr, cfg, clk, start, producers, consumers, progressDone)
		}()
	}

	timedOut := false
	var timer <-chan time.Time
	if cfg.Duration > 0 {
		t := time.NewTimer(cfg.Duration)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-prodDone:
	case <-timer:
	case <-ctx.Done():
		timedOut = true
	}
	stopPublishing.Store(true)
	// Producers bound their own confirm wait by -drain and ctx, but a publish blocked in a
	// socket write (a broker that stopped reading) ignores both; then give up on them.
	if !waitBounded(ctx, prodDone) {
		return nil, fmt.Errorf("producers still blocked %v after the run's deadline: broker not reading?", stuckGrace)
	}
	publishEnd := clk.now()

	// Drain: wait until every queue delivered what it is owed, while it keeps making progress.
	owed := make([]map[uint32]*seqSet, len(topo.queues))
	for q := range owed {
		owed[q] = map[uint32]*seqSet{}
	}
	var owedTotal uint64
	for _, p := range producers {
		if cfg.Fanout > 0 {
			for q := range owed {
				owed[q][p.id] = &p.expect
				owedTotal += p.expect.n
			}
		} else {
			owed[p.queue][p.id] = &p.expect
			owedTotal += p.expect.n
		}
	}
	if cfg.Consumers > 0 && !timedOut {
		timedOut = drain(ctx, cfg.Drain, trackers, owedTotal)
	}
	stopConsumers()
	consDone := make(chan struct{})
	go func() { consWG.Wait(); close(consDone) }()
	if !waitBounded(ctx, consDone) {
		return nil, fmt.Errorf("consumers still blocked %v after the run's deadline", stuckGrace)
	}
	close(progressDone)
	progressWG.Wait()

	return buildResult(cfg, clk, start, publishEnd, producers, consumers, trackers, owed, timedOut), nil
}

// stuckGrace is how long past the run's deadline goroutines may take to finish before the
// run is abandoned, so -timeout bounds the process even when a socket write never returns.
const stuckGrace = 5 * time.Second

// waitBounded waits for done; once ctx has ended it waits at most stuckGrace more. It
// reports whether done closed.
func waitBounded(ctx context.Context, done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	case <-ctx.Done():
	}
	select {
	case <-done:
		return true
	case <-time.After(stuckGrace):
		return false
	}
}

// drain waits until the trackers have delivered owed distinct messages in total, giving up
// after idle without progress or when ctx ends. It reports whether it gave up on ctx.
func drain(ctx context.Context, idle time.Duration, trackers []*Tracker, owed uint64) bool {
	total := func() uint64 {
		var n uint64
		for _, t := range trackers {
			n += t.Unique()
		}
		return n
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last, lastChange := total(), time.Now()
	for last < owed {
		select {
		case <-ctx.Done():
			return true
		case <-tick.C:
		}
		if n := total(); n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) >= idle {
			return false
		}
	}
	return false
}

// run sets up the connection and channel, reports on ready, waits for start, and publishes
// until told to stop. A set-up failure is reported on ready instead.
func (p *producer) run(ctx context.Context, cfg amqpConfig, exchange, key string, quota uint64, stop *atomic.Bool, clk clock,
	ready chan<- error, start <-chan struct{}) (err error) {
	reported := false
	defer func() {
		if !reported {
			ready <- err
		}
	}()
	conn, err := dial(cfg, fmt.Sprintf("parley-bench producer %d", p.id))
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("producer %d: channel: %w", p.id, err)
	}

	// With confirms, window is a semaphore of cfg.Confirm slots: a publish takes one, a
	// confirm gives one back. The broker confirms in publish order on a channel, and
	// amqp091-go resequences multiple acks into one Confirmation per tag, so tag-1 is the seq.
	var window chan struct{}
	var listenerDone chan struct{}
	if cfg.Confirm > 0 {
		if err := ch.Confirm(false); err != nil {
			return fmt.Errorf("producer %d: confirm.select: %w", p.id, err)
		}
		window = make(chan struct{}, cfg.Confirm)
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, cfg.Confirm))
		listenerDone = make(chan struct{})
		go func() {
			defer close(listenerDone)
			for c := range confirms {
				if c.Ack {
					p.expect.add(c.DeliveryTag - 1)
					p.acked.Add(1)
				} else {
					p.nacked.Add(1)
				}
				p.lastEvent.Store(clk.now())
				<-window
			}
		}()
	}

	reported = true
	ready <- nil
	select {
	case <-start:
	case <-ctx.Done():
	}

	body := newBody(cfg.Size)
	mode := amqp.Transient
	if cfg.Persistent {
		mode = amqp.Persistent
	}
	perProducerRate := cfg.Rate / float64(cfg.Producers)
	begin := clk.now()
	var woke int64 // clock time the producer last woke from pacing
	var pubErr error
	for seq := uint64(0); quota == 0 || seq < quota; seq++ {
		if stop.Load() || ctx.Err() != nil {
			break
		}
		sent := int64(-1)
		if perProducerRate > 0 {
			// Pace against a schedule rather than sleeping a fixed gap, so sleep overshoot
			// does not accumulate into a lower rate than asked for. A message is stamped with
			// its scheduled time, not the moment it left, so a broker that stalls the publisher
			// (flow control, a full socket, a slow confirm window) shows up in the latency of
			// every message it held back instead of being hidden (coordinated omission). Our
			// own oversleeping is not the broker's doing, though: a message is never stamped
			// earlier than the end of the last nap.
			due := begin + int64(float64(seq)/perProducerRate*float64(time.Second))
			slept := false
			// Short naps, so a low rate still notices the end of the run promptly.
			for d := time.Duration(due - clk.now()); d > 0 && !stop.Load() && ctx.Err() == nil; d = time.Duration(due - clk.now()) {
				time.Sleep(min(d, 100*time.Millisecond))
				slept = true
			}
			if stop.Load() || ctx.Err() != nil {
				break
			}
			if slept {
				woke = clk.now()
			}
			sent = max(due, woke)
		}
		if window != nil {
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
		}
		if sent < 0 {
			sent = clk.now()
		}
		stamp(body, p.id, seq, sent)
		err := ch.PublishWithContext(ctx, exchange, key, false, false, amqp.Publishing{
			DeliveryMode: mode,
			Body:         body,
		})
		if err != nil {
			if ctx.Err() == nil {
				pubErr = fmt.Errorf("producer %d: publish #%d: %w", p.id, seq, err)
			}
			break
		}
		p.published.Add(1)
		if window == nil {
			p.expect.add(seq)
			p.lastEvent.Store(clk.now())
		}
	}

	if window != nil && pubErr == nil {
		// Wait for outstanding confirms by filling every slot of the window; what is still
		// unconfirmed after -drain is reported as unconfirmed, not as lost.
		deadline := time.NewTimer(cfg.Drain)
		defer deadline.Stop()
	fill:
		for range cap(window) {
			select {
			case window <- struct{}{}:
			case <-deadline.C:
				break fill
			case <-ctx.Done():
				break fill
			}
		}
	}
	if window != nil {
		// Closing the channel closes the confirm stream, which ends the listener; only then
		// is expect safe to read.
		_ = ch.Close()
		<-listenerDone
	}
	return pubErr
}

func (c *consumer) run(ctx context.Context, cfg amqpConfig, queue string, t *Tracker, clk clock, ready chan<- error) error {
	conn, err := dial(cfg, fmt.Sprintf("parley-bench consumer %d", c.id))
	if err != nil {
		ready <- err
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		err = fmt.Errorf("consumer %d: channel: %w", c.id, err)
		ready <- err
		return err
	}
	if cfg.Prefetch > 0 {
		if err := ch.Qos(cfg.Prefetch, 0, false); err != nil {
			err = fmt.Errorf("consumer %d: basic.qos %d: %w", c.id, cfg.Prefetch, err)
			ready <- err
			return err
		}
	}
	deliveries, err := ch.Consume(queue, fmt.Sprintf("parley-bench-c%d", c.id), cfg.AutoAck, false, false, false, nil)
	if err != nil {
		err = fmt.Errorf("consumer %d: basic.consume %s: %w", c.id, queue, err)
		ready <- err
		return err
	}
	ready <- nil

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
	for {
		select {
		case <-ctx.Done():
			_ = ackPending()
			return nil
		case <-idle.C:
			if err := ackPending(); err != nil {
				return err
			}
		case d, ok := <-deliveries:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("consumer %d: delivery stream closed by the broker", c.id)
			}
			now := clk.now()
			if prod, seq, sent, err := parseHeader(d.Body); err == nil {
				c.hist.Record(time.Duration(now - sent))
				t.Record(prod, seq, d.Redelivered)
			} else {
				c.foreign.Add(1)
			}
			c.consumed.Add(1)
			c.lastRecv.Store(now)
			if !cfg.AutoAck {
				pending++
				lastTag = d.DeliveryTag
				if pending >= cfg.MultipleAck {
					pending = 0
					if err := ch.Ack(lastTag, cfg.MultipleAck > 1); err != nil {
						return fmt.Errorf("consumer %d: basic.ack %d: %w", c.id, lastTag, err)
					}
				}
			}
		}
	}
}
