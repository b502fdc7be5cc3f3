package broker

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
)

// signalSink is a consumer that only signals each delivery, allocating nothing.
type signalSink struct{ got chan struct{} }

func (s signalSink) Deliver(*Queue, queue.Delivery) { s.got <- struct{}{} }
func (s signalSink) Allow() bool                    { return true }
func (s signalSink) Cancelled(*Queue)               {}

// BenchmarkQueueWakeUp is one publish to a transient queue and its no-ack delivery, one at a
// time: the queue has nothing to do between two publishes, as a queue of an MQTT subscriber
// has between two messages or two PUBACKs. allocs/op shows what waking an idle queue costs
// on top of the message itself (the benchmark's Message is one allocation).
func BenchmarkQueueWakeUp(b *testing.B) {
	br, err := New(zap.NewNop(), DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	v, _ := br.VHost("/")
	if _, err := v.DeclareQueue(meta.QueueDef{Name: "q"}, false); err != nil {
		b.Fatal(err)
	}
	q, _ := v.Queue("q", 0)
	s := signalSink{got: make(chan struct{}, 1)}
	if _, err := q.Consume(ConsumeOptions{NoAck: true}, s); err != nil {
		b.Fatal(err)
	}
	body := []byte("x")
	var scratch PublishScratch
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		m := msg("", "q", "")
		m.Body = body
		if _, err := v.Publish(m, nil, &scratch); err != nil {
			b.Fatal(err)
		}
		select {
		case <-s.got:
		case <-time.After(10 * time.Second):
			b.Fatal("no delivery")
		}
	}
}

// BenchmarkIdleQueues is what idle queues cost once they have been used: n transient queues
// (PARLEY_BENCH_IDLE_QUEUES, default 10,000), each declared with a no-ack consumer and given
// one message, then left alone until their goroutines have parked. It reports the heap and
// goroutine stacks in use per queue (after a GC, against the broker before the queues) and
// how many goroutines are left per queue.
func BenchmarkIdleQueues(b *testing.B) {
	n := 10000
	if s := os.Getenv("PARLEY_BENCH_IDLE_QUEUES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	for range b.N {
		br, err := New(zap.NewNop(), DefaultConfig())
		if err != nil {
			b.Fatal(err)
		}
		v, _ := br.VHost("/")
		inUse := func() uint64 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ms.HeapInuse + ms.StackInuse
		}
		mem0, g0 := inUse(), runtime.NumGoroutine()
		s := signalSink{got: make(chan struct{}, n)}
		for i := range n {
			name := fmt.Sprint("idle", i)
			if _, err := v.DeclareQueue(meta.QueueDef{Name: name}, false); err != nil {
				b.Fatal(err)
			}
			q, _ := v.Queue(name, 0)
			if _, err := q.Consume(ConsumeOptions{NoAck: true}, s); err != nil {
				b.Fatal(err)
			}
			if _, err := v.Publish(msg("", name, "x"), nil, nil); err != nil {
				b.Fatal(err)
			}
		}
		for range n {
			<-s.got
		}
		deadline := time.Now().Add(30 * time.Second)
		for runtime.NumGoroutine() > g0+n/100 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		mem1, g1 := inUse(), runtime.NumGoroutine()
		b.ReportMetric(float64(int64(mem1)-int64(mem0))/float64(n), "B/queue")
		b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/queue")
		br.Close()
	}
}
