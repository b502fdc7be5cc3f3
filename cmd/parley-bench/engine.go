package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// A run, whatever the protocol, goes in this order: start every consumer (each on its own
// connection, as PerfTest does, so one slow socket cannot hide another) and wait until all
// are subscribed; connect every producer; open the measured window and start the producers
// on one signal; stop publishing at -duration or -count; wait for outstanding confirms; wait
// for the consumers to drain what was accepted; account. One context carries the -timeout
// bound and SIGINT/SIGTERM, so every step is bounded. The protocol modes supply only how a
// producer and a consumer talk to the broker (plan.produce, plan.consume).

// plan is one run of a message mode.
type plan struct {
	mode     string
	cfg      *common
	shape    string
	confirms bool // accepted means confirmed by the broker, not merely written
	// groups is the number of delivery groups: sets of consumers that together owe every
	// message routed to them exactly once (a queue's competing consumers, one MQTT or STOMP
	// topic subscriber, a shared subscription). Each group has its own Tracker.
	groups int
	// groupOf is the group consumer j belongs to.
	groupOf func(j int) int
	// owedTo lists the groups that must deliver producer i's messages.
	owedTo func(i int) []int
	// produce connects, calls ready(nil), waits for start, then publishes until stop or its
	// quota (0: none) with p.publishLoop. Returning before ready reports the error instead.
	produce func(ctx context.Context, p *producer, quota uint64, stop *atomic.Bool, ready func(), start <-chan struct{}) error
	// consume connects and subscribes, calls ready(), and records deliveries with c.record
	// until ctx ends.
	consume func(ctx context.Context, c *consumer, t *Tracker, ready func()) error
}

// clock is the run's monotonic epoch: send stamps and receive times are both offsets from
// it, so latency never depends on wall-clock steps.
type clock struct{ epoch time.Time }

func (c clock) now() int64 { return int64(time.Since(c.epoch)) }

type producer struct {
	id        uint32
	clk       clock
	published atomic.Uint64
	acked     atomic.Uint64
	nacked    atomic.Uint64
	lastEvent atomic.Int64 // clock time of the last publish, or last confirm with confirms
	// flush, if a mode sets it, writes out publishes it let the connection buffer
	// (corkconn.go); publishLoop calls it before every wait and when it stops.
	flush func() error
	// expect is what consumers must deliver: every published seq, or only confirmed ones with
	// confirms. Written by the producer (or its confirm listener) and read after both exit.
	expect seqSet
	err    error
}

type consumer struct {
	id       int
	clk      clock
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

// onceReady turns a mode's ready() call, or its early return, into exactly one report.
type onceReady struct {
	ch   chan<- error
	done bool
}

func (o *onceReady) ok() {
	if !o.done {
		o.done = true
		o.ch <- nil
	}
}

func (o *onceReady) fail(err error) {
	if !o.done {
		o.done = true
		if err == nil {
			err = fmt.Errorf("returned before it was ready")
		}
		o.ch <- err
	}
}

func execute(ctx context.Context, pl plan, stderr io.Writer) (*Result, error) {
	cfg := pl.cfg
	trackers := make([]*Tracker, pl.groups)
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
		c := &consumer{id: j, clk: clk}
		consumers[j] = c
		consWG.Add(1)
		go func() {
			defer consWG.Done()
			r := &onceReady{ch: ready}
			c.err = pl.consume(consCtx, c, trackers[pl.groupOf(j)], r.ok)
			r.fail(c.err)
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
		p := &producer{id: uint32(i), clk: clk}
		producers[i] = p
		prodWG.Add(1)
		go func() {
			defer prodWG.Done()
			r := &onceReady{ch: prodReady}
			p.err = pl.produce(ctx, p, cfg.quota(i), &stopPublishing, r.ok, startSignal)
			r.fail(p.err)
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
			reportProgress(stderr, cfg.Label, cfg.Progress, clk, start, producers, consumers, progressDone)
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

	// Drain: wait until every group delivered what it is owed, while it keeps making progress.
	owed := make([]map[uint32]*seqSet, pl.groups)
	for g := range owed {
		owed[g] = map[uint32]*seqSet{}
	}
	var owedTotal uint64
	for i, p := range producers {
		for _, g := range pl.owedTo(i) {
			owed[g][p.id] = &p.expect
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

	return buildResult(pl, start, publishEnd, producers, consumers, trackers, owed, timedOut), nil
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

// window bounds a producer's unconfirmed messages: a publish takes a slot, a confirm (or
// nack) gives it back. nil means no confirms: every published message is owed at once.
type window chan struct{}

func newWindow(size int) window {
	if size <= 0 {
		return nil
	}
	return make(window, size)
}

// release gives back one slot, after the confirm listener has accounted the message.
func (w window) release() { <-w }

// fill waits for every outstanding confirm by taking every slot; what is still unconfirmed
// after drain (or when ctx ends) is reported as unconfirmed, not as lost.
func (w window) fill(ctx context.Context, drain time.Duration) {
	deadline := time.NewTimer(drain)
	defer deadline.Stop()
	for range cap(w) {
		select {
		case w <- struct{}{}:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// confirmed is called by a mode's confirm listener for message seq.
func (p *producer) confirmed(seq uint64, ok bool) {
	if ok {
		p.expect.add(seq)
		p.acked.Add(1)
	} else {
		p.nacked.Add(1)
	}
	p.lastEvent.Store(p.clk.now())
}

// publishLoop publishes stamped bodies until stop, ctx or quota (0: none), paced to the
// producer's share of -rate. With a window, each publish first takes a slot, and the mode's
// confirm listener calls confirmed and release; without one, a message is owed as soon as
// publish returns.
func (p *producer) publishLoop(ctx context.Context, cfg *common, quota uint64, stop *atomic.Bool, w window,
	publish func(seq uint64, body []byte) error) error {
	body := newBody(cfg.Size, cfg.textBodies)
	perProducerRate := cfg.Rate / float64(cfg.Producers)
	clk := p.clk
	begin := clk.now()
	var woke int64 // clock time the producer last woke from pacing
	flush := p.flush
	if flush == nil {
		flush = func() error { return nil }
	}
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
			if due > clk.now() {
				if err := flush(); err != nil {
					return p.publishErr(ctx, seq, err)
				}
			}
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
		if w != nil {
			select {
			case w <- struct{}{}:
			default:
				// The window is full: what is buffered must reach the broker before its
				// confirms can free a slot.
				if err := flush(); err != nil {
					return p.publishErr(ctx, seq, err)
				}
				select {
				case w <- struct{}{}:
				case <-ctx.Done():
				}
			}
			if ctx.Err() != nil {
				break
			}
		}
		if sent < 0 {
			sent = clk.now()
		}
		stamp(body, p.id, seq, sent)
		if err := publish(seq, body); err != nil {
			return p.publishErr(ctx, seq, err)
		}
		p.published.Add(1)
		if w == nil {
			p.expect.add(seq)
			p.lastEvent.Store(clk.now())
		}
	}
	if err := flush(); err != nil {
		return p.publishErr(ctx, 0, err)
	}
	return nil
}

// publishErr is publishLoop's error for a failed publish (or flush of buffered publishes, seq
// 0): none once ctx has ended, since then a failure is the run stopping.
func (p *producer) publishErr(ctx context.Context, seq uint64, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("producer %d: publish #%d: %w", p.id, seq, err)
}

// record accounts one delivery in t and the consumer's latency histogram. redelivered is the
// protocol's own flag for a copy the broker knowingly sends again (AMQP redelivered, MQTT
// DUP, STOMP redelivered header).
func (c *consumer) record(body []byte, redelivered bool, t *Tracker) {
	now := c.clk.now()
	if prod, seq, sent, err := parseHeader(body); err == nil {
		c.hist.Record(time.Duration(now - sent))
		t.Record(prod, seq, redelivered)
	} else {
		c.foreign.Add(1)
	}
	c.consumed.Add(1)
	c.lastRecv.Store(now)
}
