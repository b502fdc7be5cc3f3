package queue

import (
	"testing"

	"github.com/parleymq/parley/broker/message"
)

func TestQueueScripts(t *testing.T) {
	cfg := func(f func(*Config)) Config { c := cfgDefault(); f(&c); return c }
	dlx := func(c *Config) { c.HasDeadLetterExchange = true; c.DeadLetterExchange = "dlx" }
	tests := []struct {
		name   string
		cfg    Config
		script string
	}{
		{"fifo to one consumer", cfgDefault(), `
			pub a
			pub b
			state => ready=2 bytes=2 unacked=0 consumers=0
			consume 1
			drain => 1:a 1:b
			state => ready=0 bytes=0 unacked=2 consumers=1
			ack a b
			state => ready=0 bytes=0 unacked=0 consumers=1`},
		{"round robin", cfgDefault(), `
			consume 1
			consume 2
			consume 3
			pub a
			pub b
			pub c
			pub d
			drain => 1:a 2:b 3:c 1:d
			pub e
			drain => 2:e`},
		{"newcomer joins the tail of the round", cfgDefault(), `
			consume 1
			consume 2
			pub a
			drain => 1:a
			consume 3
			pub b
			pub c
			pub d
			drain => 2:b 1:c 3:d`},
		{"cancel keeps the round", cfgDefault(), `
			consume 1
			consume 2
			consume 3
			pub a
			drain => 1:a
			cancel 2
			pub b
			pub c
			drain => 3:b 1:c`},
		{"prefetch", cfgDefault(), `
			consume 1 prefetch=2
			pub a
			pub b
			pub c
			drain => 1:a 1:b
			state => ready=1 bytes=1 unacked=2 consumers=1
			ack b
			drain => 1:c
			drain
			ack a c`},
		{"prefetch spills to the other consumer", cfgDefault(), `
			consume 1 prefetch=1
			consume 2 prefetch=0
			pub a
			pub b
			pub c
			drain => 1:a 2:b 2:c`},
		{"noack consumer is never outstanding", cfgDefault(), `
			consume 1 noack prefetch=1
			pub a
			pub b
			drain => 1:a 1:b
			state => ready=0 bytes=0 unacked=0 consumers=1
			ack a => unknown`},
		{"consumer priority", cfgDefault(), `
			consume 1 prio=1 prefetch=1
			consume 2 prio=5 prefetch=2
			consume 3 prio=5 prefetch=1
			consume 4 prio=-3
			pub a
			pub b
			pub c
			pub d
			pub e
			drain => 2:a 3:b 2:c 1:d 4:e
			ack a
			pub f
			drain => 2:f`},
		{"allow gate skips a consumer for the round", cfgDefault(), `
			consume 1
			consume 2
			pub a
			pub b
			pub c
			drain deny=1 => 2:a 2:b 2:c
			pub d
			drain => 1:d
			pub e
			drain deny=1,2
			state => ready=1 bytes=1 unacked=4 consumers=2`},
		{"requeue goes back to its place, redelivered", cfgDefault(), `
			consume 1 prefetch=2
			pub a
			pub b
			pub c
			pub d
			drain => 1:a 1:b
			requeue b
			state => ready=3 bytes=3 unacked=1 consumers=1
			drain => 1:b*
			requeue a b
			drain => 1:a* 1:b*
			ack a
			drain => 1:c
			cancel 1
			requeue b c
			get => b*
			get noack => c*
			get noack => d
			get => empty`},
		{"requeue out of order keeps publish order", cfgDefault(), `
			pub a
			pub b
			pub c
			pub d
			pub e
			get => a
			get => b
			get => c
			get => d
			requeue d
			requeue b
			requeue c
			requeue a
			get noack => a*
			get noack => b*
			get noack => c*
			get noack => d*
			get noack => e`},
		{"cancel keeps unacked ackable", cfgDefault(), `
			consume 1
			pub a
			drain => 1:a
			cancel 1
			state => ready=0 bytes=0 unacked=1 consumers=0
			pub b
			drain
			ack a
			state => ready=1 bytes=1 unacked=0 consumers=0`},
		{"settle errors change nothing", cfgDefault(), `
			consume 1
			pub a
			pub b
			drain => 1:a 1:b
			ack a
			ack b a => unknown
			ack b b => unknown
			state => ready=0 bytes=0 unacked=1 consumers=1
			ack b
			ack b => unknown`},
		{"discard without dlx drops", cfgDefault(), `
			pub a
			get => a
			discard a
			state => ready=0 bytes=0 unacked=0 consumers=0`},
		{"discard with dlx dead-letters rejected", cfg(dlx), `
			pub a
			pub b
			get => a
			get => b
			discard a b => dl:a/rejected dl:b/rejected`},
		{"exclusive consumer", cfgDefault(), `
			consume 1 excl
			consume 2 => exclusive
			consume 3 excl => exclusive
			cancel 1
			consume 2
			consume 3 excl => exclusive
			consume 2 => duplicate`},
		{"single active consumer", cfg(func(c *Config) { c.SingleActiveConsumer = true }), `
			consume 1 prefetch=1
			consume 2 prio=10
			pub a
			pub b
			drain => 1:a
			ack a
			drain => 1:b
			cancel 1
			requeue b
			drain => 2:b*
			pub c
			drain => 2:c`},
		{"basic.get counts as outstanding", cfgDefault(), `
			pub a
			get => a
			state => ready=0 bytes=0 unacked=1 consumers=0
			requeue a
			get noack => a*
			state => ready=0 bytes=0 unacked=0 consumers=0`},
		{"purge leaves unacked", cfgDefault(), `
			pub a
			pub b
			pub c
			get => a
			purge => 2
			state => ready=0 bytes=0 unacked=1 consumers=0
			requeue a
			purge => 1`},
		{"priority queue", cfg(func(c *Config) { c.MaxPriority = 5 }), `
			pub a
			pub b prio=3
			pub c prio=9
			pub d prio=5
			pub e prio=3
			pub f prio=0
			get => c
			get => d
			get => b
			get => e
			get => a
			get => f
			requeue d
			requeue a
			requeue c
			get noack => c*
			get noack => d*
			get noack => a*`},
		{"priority ignored without x-max-priority", cfgDefault(), `
			pub a
			pub b prio=9
			get noack => a
			get noack => b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runScript(t, tt.cfg, tt.script) })
	}
}

func TestTTLScripts(t *testing.T) {
	cfg := func(f func(*Config)) Config { c := cfgDefault(); f(&c); return c }
	dlx := func(c *Config) { c.HasDeadLetterExchange = true }
	ttl := func(ms int64) func(*Config) { return func(c *Config) { c.MessageTTL = ms; dlx(c) } }
	tests := []struct {
		name   string
		cfg    Config
		script string
	}{
		{"queue ttl expires at head", cfg(ttl(100)), `
			@1000 pub a
			@1050 pub b
			expiry => 1100
			@1099 drain
			@1100 drain => dl:a/expired
			expiry => 1150
			@1200 get => empty dl:b/expired`},
		{"per-message ttl, lower of the two", cfg(ttl(100)), `
			@1000 pub a exp=50
			pub b exp=500
			pub c exp=junk
			expiry => 1050
			@1050 drain => dl:a/expired
			expiry => 1100
			@1100 drain => dl:b/expired dl:c/expired`},
		{"per-message ttl only at the head", cfg(dlx), `
			@1000 pub a exp=1000
			pub b exp=10
			pub c
			expiry => 2000
			@1500 drain
			state => ready=3 bytes=3 unacked=0 consumers=0
			@2000 drain => dl:a/expired dl:b/expired
			expiry => none`},
		{"expired not delivered", cfg(ttl(100)), `
			@1000 pub a
			pub b exp=10
			pub c
			@1050 consume 1
			drain => 1:a 1:c dl:b/expired`},
		{"requeued message keeps its expiry", cfg(ttl(100)), `
			@1000 pub a
			@1050 pub b
			@1060 get => a
			@1200 requeue a
			expiry => 1100
			drain => dl:a/expired dl:b/expired`},
		{"ttl 0 delivers only right away", cfg(ttl(0)), `
			@1000 consume 1 prefetch=1
			pub a => 1:a
			pub b => dl:b/expired
			drain
			ack a
			pub c => 1:c
			requeue c
			drain => dl:c/expired
			pub d => 1:d
			pub e exp=0 => dl:e/expired
			drain deny=1
			ack d
			pub f => dl:f/expired
			consume 2 noack
			pub g => 2:g
			state => ready=0 bytes=0 unacked=0 consumers=2`},
		{"ttl 0 after a batch: earlier messages are delivered first", cfg(dlx), `
			@1000 consume 1 prefetch=3
			pub a
			pub b
			pub c exp=0 => 1:a 1:b 1:c
			pub d
			pub e exp=0
			state => ready=2 bytes=2 unacked=3 consumers=1
			ack a
			drain => 1:d dl:e/expired`},
		{"ttl 0 behind other messages waits for the head", cfg(func(c *Config) { dlx(c); c.MessageTTL = 1000 }), `
			@1000 pub a
			pub b exp=0
			state => ready=2 bytes=2 unacked=0 consumers=0
			get => a
			get => empty dl:b/expired`},
		{"ttl 0 without consumers", cfg(ttl(0)), `
			@1000 pub a => dl:a/expired
			pub b => dl:b/expired
			@1001 consume 1
			drain`},
		{"expired without dlx is dropped", cfg(func(c *Config) { c.MessageTTL = 10 }), `
			@0 pub a
			@10 drain
			state => ready=0 bytes=0 unacked=0 consumers=0`},
		{"priority levels expire at their heads", cfg(func(c *Config) { dlx(c); c.MaxPriority = 2 }), `
			@0 pub a exp=10
			pub b prio=2 exp=100
			pub c prio=1 exp=5
			expiry => 5
			@10 drain => dl:a/expired dl:c/expired
			expiry => 100`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runScript(t, tt.cfg, tt.script) })
	}
}

func TestLengthLimitScripts(t *testing.T) {
	cfg := func(f func(*Config)) Config { c := cfgDefault(); f(&c); return c }
	tests := []struct {
		name   string
		cfg    Config
		script string
	}{
		{"drop-head", cfg(func(c *Config) { c.MaxLength = 2; c.HasDeadLetterExchange = true }), `
			pub a
			pub b
			pub c => dl:a/maxlen
			pub d => dl:b/maxlen
			state => ready=2 bytes=2 unacked=0 consumers=0`},
		{"drop-head takes the highest priority first, as the reference broker does", cfg(func(c *Config) { c.MaxLength = 2; c.MaxPriority = 5; c.HasDeadLetterExchange = true }), `
			pub a
			pub b prio=5
			pub c => dl:b/maxlen
			get noack => a
			get noack => c`},
		{"lowered limit drops at once", cfg(func(c *Config) { c.HasDeadLetterExchange = true }), `
			pub a
			pub b
			pub c
			maxlen n=1 => dl:a/maxlen dl:b/maxlen
			pub d => dl:c/maxlen`},
		{"drop-head without dlx", cfg(func(c *Config) { c.MaxLength = 1 }), `
			pub a
			pub b
			get noack => b`},
		{"max length counts ready only", cfg(func(c *Config) { c.MaxLength = 1; c.HasDeadLetterExchange = true }), `
			pub a
			get => a
			pub b
			pub c => dl:b/maxlen
			requeue a => dl:a/maxlen
			get noack => c`},
		{"drop-head delivers first", cfg(func(c *Config) { c.MaxLength = 0; c.HasDeadLetterExchange = true }), `
			consume 1 prefetch=1
			pub a => 1:a
			pub b => dl:b/maxlen
			pub c => dl:c/maxlen
			ack a
			pub d => 1:d`},
		{"max length bytes", cfg(func(c *Config) { c.MaxLengthBytes = 10; c.HasDeadLetterExchange = true }), `
			pub a size=4
			pub b size=4
			pub c size=4 => dl:a/maxlen
			state => ready=2 bytes=8 unacked=0 consumers=0
			pub d size=11 => dl:b/maxlen dl:c/maxlen dl:d/maxlen
			state => ready=0 bytes=0 unacked=0 consumers=0`},
		{"reject-publish", cfg(func(c *Config) { c.MaxLength = 2; c.Overflow = RejectPublish; c.HasDeadLetterExchange = true }), `
			pub a
			pub b
			pub c => refused
			get => a
			pub d
			pub e => refused
			state => ready=2 bytes=2 unacked=1 consumers=0
			requeue a
			state => ready=3 bytes=3 unacked=0 consumers=0`},
		{"reject-publish delivers before refusing", cfg(func(c *Config) { c.MaxLength = 1; c.Overflow = RejectPublish }), `
			consume 1 prefetch=2
			pub a
			pub b => 1:a
			pub c => 1:b
			pub d => refused
			drain
			state => ready=1 bytes=1 unacked=2 consumers=1`},
		{"reject-publish-dlx", cfg(func(c *Config) { c.MaxLengthBytes = 5; c.Overflow = RejectPublishDLX; c.HasDeadLetterExchange = true }), `
			pub a size=3
			pub b size=3 => refused dl:b/maxlen
			pub c size=2`},
		{"reject-publish-dlx without dlx", cfg(func(c *Config) { c.MaxLength = 0; c.Overflow = RejectPublishDLX }), `
			pub a => refused`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runScript(t, tt.cfg, tt.script) })
	}
}

// TestDrainRoundIsBounded: one Drain hands out at most MaxRoundBytes and says so in
// Output.More; the next Drain goes on from there, in order, until nothing is ready. A
// consumer's allow looks at its connection's output, which grows only once the driver carries
// a round out, so an unbounded round handed a whole backlog to one connection.
func TestDrainRoundIsBounded(t *testing.T) {
	q := New(cfgDefault())
	if err := q.AddConsumer(ConsumerSpec{ID: 1, NoAck: true}); err != nil {
		t.Fatal(err)
	}
	var out Output
	const n, size = 1000, 4096
	for i := range n {
		body := make([]byte, size)
		body[0] = byte(i)
		q.Publish(0, &message.Message{Body: body}, &out)
	}
	perRound := MaxRoundBytes/(size+roundOverhead) + 1
	got, rounds := 0, 0
	for {
		out.Reset()
		q.Drain(0, func(ConsumerID) bool { return true }, &out)
		rounds++
		if len(out.Deliveries) > perRound {
			t.Fatalf("round %d handed out %d deliveries, more than MaxRoundBytes (%d)", rounds, len(out.Deliveries), perRound)
		}
		for _, d := range out.Deliveries {
			if d.Msg.Body[0] != byte(got) {
				t.Fatalf("delivery %d out of order", got)
			}
			got++
		}
		if !out.More {
			break
		}
		if rounds > n {
			t.Fatal("Drain keeps asking for more")
		}
	}
	if got != n || q.Len() != 0 {
		t.Fatalf("delivered %d of %d, %d left ready", got, n, q.Len())
	}
	if rounds < n*size/MaxRoundBytes {
		t.Fatalf("%d rounds for %d bytes", rounds, n*size)
	}
}
