package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	sframe "github.com/go-stomp/stomp/v3/frame"
	amqp "github.com/rabbitmq/amqp091-go"
)

// TestDiskAlarmBlocksSTOMP: with the disk alarm on, a STOMP SEND is held (no RECEIPT, the
// connection is not read) and not lost; when space comes back the RECEIPT arrives and the
// message is in its queue. Same tmpfs set-up as TestDiskAlarmBlocksPublishers.
func TestDiskAlarmBlocksSTOMP(t *testing.T) {
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
	cfg := writeConfig(t, "storage:\n  disk_free_limit: 32000000\n  disk_check_interval: 100ms\n")
	s, addr := startSTOMP(t, "--config", cfg, "--data-dir", filepath.Join(mnt, "data"))
	c := dial(t, s)
	blocked := c.NotifyBlocked(make(chan amqp.Blocking, 4))
	ch := channel(t, c)
	q := Name(t, "alarm")
	r := dialRaw(t, addr)
	r.connect("1.2")
	// Declared (durable, by SEND) and stored before the alarm.
	r.send("SEND\ndestination:/queue/" + q + "\npersistent:true\nreceipt:before\n\nbefore\x00")
	if f := r.read(); f.Command != sframe.RECEIPT || f.Header.Get(sframe.ReceiptId) != "before" {
		t.Fatalf("got %s %v", f.Command, f.Header)
	}

	filler := filepath.Join(mnt, "filler")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=40").CombinedOutput(); err != nil {
		t.Fatalf("fill: %v: %s", err, out)
	}
	expectBlocking(t, blocked, true) // the alarm is on (seen through an AMQP connection)

	r.send("SEND\ndestination:/queue/" + q + "\npersistent:true\nreceipt:held\n\nheld\x00")
	_ = r.nc.SetReadDeadline(time.Now().Add(quietPeriod))
	if f, err := r.r.Read(); err == nil && f != nil {
		t.Fatalf("got %s %v while the disk alarm is on", f.Command, f.Header)
	}
	_ = r.nc.SetReadDeadline(time.Now().Add(2 * waitTimeout))
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	expectBlocking(t, blocked, false)
	if f := r.read(); f.Command != sframe.RECEIPT || f.Header.Get(sframe.ReceiptId) != "held" {
		t.Fatalf("got %s %v", f.Command, f.Header)
	}
	for _, want := range []string{"before", "held"} {
		if got := getBody(t, ch, q); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}
