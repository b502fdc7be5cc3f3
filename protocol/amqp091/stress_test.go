package amqp091

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestConcurrentPublishConsume runs confirming publishers and acking consumers on several
// connections at once: every message must arrive and every publish must be confirmed, with
// confirms in order.
func TestConcurrentPublishConsume(t *testing.T) {
	url, _ := testServer(t)
	const pubs, per = 4, 2000
	_, setup := dial(t, url)
	if _, err := setup.QueueDeclare("stress", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	var received atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		_, ch := dial(t, url)
		if err := ch.Qos(50, 0, i == 0); err != nil {
			t.Fatal(err)
		}
		ds, err := ch.Consume("stress", "", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		go func(i int) {
			n := 0
			for d := range ds {
				received.Add(1)
				n++
				if n%10 == 0 || i == 2 {
					_ = d.Ack(i != 2)
				} else if n%7 == 0 {
					_ = d.Ack(false)
				}
			}
		}(i)
	}
	for p := 0; p < pubs; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ch := dial(t, url)
			if err := ch.Confirm(false); err != nil {
				t.Error(err)
				return
			}
			confirms := ch.NotifyPublish(make(chan amqp.Confirmation, per))
			for i := 0; i < per; i++ {
				if err := ch.PublishWithContext(ctx(t), "", "stress", false, false, amqp.Publishing{Body: []byte(fmt.Sprint(i))}); err != nil {
					t.Error(err)
					return
				}
			}
			for i := 1; i <= per; i++ {
				select {
				case c := <-confirms:
					if c.DeliveryTag != uint64(i) || !c.Ack {
						t.Errorf("confirm %d: %+v", i, c)
						return
					}
				case <-time.After(20 * time.Second):
					t.Errorf("confirm %d missing", i)
					return
				}
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for received.Load() < pubs*per {
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d", received.Load(), pubs*per)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
