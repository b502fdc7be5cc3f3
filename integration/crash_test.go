package integration

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// crashRounds is how many kill -9 rounds TestCrashKeepsConfirmedMessages runs: 20 in make test,
// 200 under make test-long.
func crashRounds() int {
	if os.Getenv("PARLEY_TEST_LONG") != "" {
		return 200
	}
	return 20
}

// TestCrashKeepsConfirmedMessages kills parley with SIGKILL at random moments while publishers
// with confirms are running, restarts it, and checks after every round that every confirmed
// message is still there (delivered once, or redelivered) and that nothing unpublished appears.
func TestCrashKeepsConfirmedMessages(t *testing.T) {
	s := StartParley(t)
	s.SkipIfExternal(t, "it kills the broker")
	q := Name(t, "crash")
	{
		c := dial(t, s)
		ch := channel(t, c)
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	confirmed := map[uint64]bool{} // every sequence number ever confirmed
	consumed := map[uint64]bool{}  // every sequence number consumed and acked
	var next uint64                // next sequence number to publish
	for round := 0; round < crashRounds(); round++ {
		// Publish from two connections until the kill.
		ctx, cancel := context.WithCancel(context.Background())
		var mu sync.Mutex
		var wg sync.WaitGroup
		for p := 0; p < 2; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				publishUntilKilled(ctx, s.URL, q, &mu, &next, confirmed)
			}()
		}
		time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond)
		s.Kill()
		cancel()
		wg.Wait()
		s.Restart()

		// Drain what is there and check it.
		c := dial(t, s)
		ch := channel(t, c)
		for {
			d, ok, err := ch.Get(q, false)
			if err != nil {
				t.Fatalf("round %d: get: %v", round, err)
			}
			if !ok {
				break
			}
			if len(d.Body) < 8 {
				t.Fatalf("round %d: a message that no publisher sent: %q", round, d.Body)
			}
			seq := binary.BigEndian.Uint64(d.Body)
			mu.Lock()
			published := seq < next
			mu.Unlock()
			if !published {
				t.Fatalf("round %d: message %d was never published", round, seq)
			}
			if consumed[seq] && !d.Redelivered {
				t.Fatalf("round %d: message %d delivered again without the redelivered flag", round, seq)
			}
			consumed[seq] = true
			if err := d.Ack(false); err != nil {
				t.Fatalf("round %d: ack: %v", round, err)
			}
		}
		c.Close()
		for seq := range confirmed {
			if !consumed[seq] {
				t.Fatalf("round %d: confirmed message %d lost (%d confirmed so far)", round, seq, len(confirmed))
			}
		}
	}
	if len(confirmed) == 0 {
		t.Fatal("no message was ever confirmed: the test proved nothing")
	}
	t.Logf("%d rounds, %d messages confirmed, all found", crashRounds(), len(confirmed))
}

// publishUntilKilled publishes persistent, numbered messages with confirms until the broker
// goes away or ctx ends, recording what was confirmed.
func publishUntilKilled(ctx context.Context, url, q string, mu *sync.Mutex, next *uint64, confirmed map[uint64]bool) {
	c, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		return
	}
	if ch.Confirm(false) != nil {
		return
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 256))
	var tag uint64
	seqOf := map[uint64]uint64{} // delivery tag -> sequence number, for the confirms in flight
	for ctx.Err() == nil {
		mu.Lock()
		seq := *next
		*next++
		mu.Unlock()
		body := binary.BigEndian.AppendUint64(make([]byte, 0, 64), seq)
		body = append(body, "crash-test-payload-crash-test-payload-crash-test"...)
		if ch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}) != nil {
			return
		}
		tag++
		seqOf[tag] = seq
		if len(seqOf) < 32 {
			continue
		}
		for len(seqOf) > 0 {
			conf, ok := <-confirms
			if !ok {
				return
			}
			if conf.Ack {
				mu.Lock()
				confirmed[seqOf[conf.DeliveryTag]] = true
				mu.Unlock()
			}
			delete(seqOf, conf.DeliveryTag)
		}
	}
}
