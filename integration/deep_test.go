package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// deepCount is how many persistent 1 KB messages TestDeepQueue leaves in a queue with no
// consumer: 200,000 in make test, 1,000,000 under make test-long.
func deepCount() int {
	if os.Getenv("PARLEY_TEST_LONG") != "" {
		return 1_000_000
	}
	return 200_000
}

// deepMemoryPerMessage bounds the broker's resident memory per queued message, beyond its
// memory before: the queue keeps a record and a stub per message (about 80 bytes), not the
// 1 KB body. deepMemoryFixed is what Pebble and the runtime may take whatever the depth: two
// 64 MiB memtables, the block cache, the raft tail cache, the heap's slack.
const (
	deepMemoryPerMessage = 256
	deepMemoryFixed      = 192 << 20
)

// rss reads a process's resident memory (VmRSS) or its peak (VmHWM) in bytes.
func rss(t testing.TB, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading memory of pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parsing %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestDeepQueue fills a durable queue with deepCount persistent 1 KB messages and no consumer
// (DESIGN.md §4: the log is the message store). The broker's memory must stay bounded: the
// bodies stay in the log, not in memory. After a kill -9 the broker comes back with every
// message, reading records rather than bodies, and a consumer then gets each publisher's
// messages in order, every one exactly once. The figures (memory, publish rate, recovery time)
// go to the test log for docs/performance.md; none is asserted as a duration.
func TestDeepQueue(t *testing.T) {
	s := StartParley(t)
	s.SkipIfExternal(t, "it measures the broker's memory and kills it")
	q := Name(t, "deep")
	admin := dial(t, s)
	ach := channel(t, admin)
	if _, err := ach.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatalf("queue.declare %s: %v", q, err)
	}
	cleanupQueue(t, s, q)
	before := rss(t, s.Pid(), "VmRSS")

	total := deepCount()
	perPublisher := total / spacePublishers
	total = perPublisher * spacePublishers
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, spacePublishers)
	var wg sync.WaitGroup
	started := time.Now()
	for p := range spacePublishers {
		pch := channel(t, dial(t, s))
		wg.Go(func() {
			if err := publishBulk(ctx, pch, q, p, perPublisher); err != nil {
				errs <- fmt.Errorf("publisher %d: %w", p, err)
				cancel()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	elapsed := time.Since(started)
	after := rss(t, s.Pid(), "VmRSS")
	peak := rss(t, s.Pid(), "VmHWM")
	t.Logf("%d persistent 1 KB messages confirmed in %v (%.0f msg/s); broker RSS %d MB before, %d MB after, peak %d MB (%d bytes a message above the start)",
		total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(),
		before>>20, after>>20, peak>>20, (peak-before)/int64(total))
	if limit := before + deepMemoryFixed + int64(total)*deepMemoryPerMessage; peak > limit {
		t.Errorf("broker memory peaked at %d MB for %d queued messages (limit %d MB): bodies are held in memory",
			peak>>20, total, limit>>20)
	}

	s.Kill()
	restartAt := time.Now()
	s.Restart()
	recovery := time.Since(restartAt)
	admin = dial(t, s)
	ach = channel(t, admin)
	st, err := ach.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("queue.declare passive after restart: %v", err)
	}
	t.Logf("after kill -9: the broker accepted connections %v after starting, with %d messages; RSS %d MB",
		recovery.Round(time.Millisecond), st.Messages, rss(t, s.Pid(), "VmRSS")>>20)
	if st.Messages != total {
		t.Fatalf("%d messages after restart, want %d", st.Messages, total)
	}

	// Drain it: each publisher's messages in order, none missing, none twice.
	cch := channel(t, dial(t, s))
	if err := cch.Qos(1000, 0, false); err != nil {
		t.Fatalf("basic.qos: %v", err)
	}
	deliveries := consume(t, cch, q, "drain", false, nil)
	next := make([]uint32, spacePublishers)
	drainStart := time.Now()
	for i := range total {
		m := recv(t, deliveries)
		if len(m.Body) != spaceBodySize {
			t.Fatalf("message %d: %d bytes", i, len(m.Body))
		}
		p, seq := binary.BigEndian.Uint32(m.Body), binary.BigEndian.Uint32(m.Body[4:])
		if int(p) >= spacePublishers || seq != next[p] {
			t.Fatalf("message %d: publisher %d seq %d, want seq %d", i, p, seq, next[p])
		}
		next[p]++
		if i%500 == 499 || i == total-1 {
			if err := m.Ack(true); err != nil {
				t.Fatalf("basic.ack: %v", err)
			}
		}
	}
	t.Logf("drained %d messages from the log in %v; broker peak RSS %d MB", total,
		time.Since(drainStart).Round(time.Millisecond), rss(t, s.Pid(), "VmHWM")>>20)
}
