package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestDiskAlarmBlocksPublishers puts the data directory on a 64 MB tmpfs with a 32 MB free-space
// limit, fills the filesystem, and checks that publishing connections get connection.blocked,
// that a message published meanwhile is held, not lost, and that everything resumes (unblocked,
// message delivered) once space comes back. The broker keeps running throughout.
func TestDiskAlarmBlocksPublishers(t *testing.T) {
	if ExternalURL() != "" {
		t.Skip("it needs the broker's data directory on a filesystem the test controls")
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (CI runs as root)")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	cfg := filepath.Join(t.TempDir(), "parley.yaml")
	if err := os.WriteFile(cfg, []byte("storage:\n  disk_free_limit: 32000000\n  disk_check_interval: 100ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(mnt, "data")
	s := StartParley(t, "--config", cfg, "--data-dir", data)

	c := dial(t, s)
	blocked := c.NotifyBlocked(make(chan amqp.Blocking, 4))
	ch := channel(t, c)
	q := Name(t, "alarm")
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 4))

	// Fill the filesystem to under the limit.
	filler := filepath.Join(mnt, "filler")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=40").CombinedOutput(); err != nil {
		t.Fatalf("fill: %v: %s", err, out)
	}
	expectBlocking(t, blocked, true)

	// Published while blocked: as RabbitMQ, parley stops reading a blocked connection once it
	// publishes, so at most the first of these gets through until the alarm clears.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, body := range []string{"held-1", "held-2"} {
		if err := ch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	early := 0
	for wait := time.After(500 * time.Millisecond); ; {
		select {
		case <-confirms:
			early++
			continue
		case <-wait:
		}
		break
	}
	if early > 1 {
		t.Fatalf("%d confirms while the disk alarm is on: the connection was still being read", early)
	}

	// A consumer on another connection still works: the broker is running.
	c2 := dial(t, s)
	ch2 := channel(t, c2)
	if _, err := ch2.QueueDeclarePassive(q, true, false, false, false, nil); err != nil {
		t.Fatalf("broker not serving during the alarm: %v", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	expectBlocking(t, blocked, false)
	for i := early; i < 2; i++ {
		select {
		case cf := <-confirms:
			if !cf.Ack {
				t.Fatalf("held message nacked: %+v", cf)
			}
		case <-time.After(waitTimeout):
			t.Fatal("no confirm after the alarm cleared")
		}
	}
	for _, want := range []string{"held-1", "held-2"} {
		d, ok, err := ch2.Get(q, true)
		if err != nil || !ok || string(d.Body) != want {
			t.Fatalf("held message: ok=%v err=%v body=%q, want %q", ok, err, d.Body, want)
		}
	}
}

func expectBlocking(t *testing.T, c <-chan amqp.Blocking, active bool) {
	t.Helper()
	select {
	case b := <-c:
		if b.Active != active {
			t.Fatalf("connection.blocked active=%v (%q), want %v", b.Active, b.Reason, active)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("no connection.blocked active=%v", active)
	}
}
