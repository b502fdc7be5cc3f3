package integration

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// toolsURL spells vhost "/" as %2f: rabbitmq-c reads "amqp://host:port/" as the empty vhost.
func toolsURL(s *Server) string {
	return strings.TrimSuffix(s.URL, "/") + "/%2f"
}

// runTool runs one of rabbitmq-c's command-line tools (bounded) and returns its stdout.
func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (Debian package amqp-tools): %v; %v", name, err, ErrNoBinary)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Logf("%s %s: %v; stderr: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out), err
}

func mustTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runTool(t, name, args...)
	if err != nil {
		t.Fatalf("%s failed: %v", name, err)
	}
	return out
}

// TestRabbitMQCTools drives the server with amqp-declare-queue, amqp-publish, amqp-get and
// amqp-consume (rabbitmq-c), and checks what they did with amqp091-go.
func TestRabbitMQCTools(t *testing.T) {
	t.Parallel()
	s := StartParley(t)
	u := toolsURL(s)
	q := Name(t, "tools")
	cleanupQueue(t, s, q)

	if out := mustTool(t, "amqp-declare-queue", "-u", u, "-q", q); strings.TrimSpace(out) != q {
		t.Fatalf("amqp-declare-queue printed %q, want %q", out, q)
	}
	mustTool(t, "amqp-publish", "-u", u, "-r", q, "-b", "first", "-C", "text/plain", "-p", "-H", "k: v")
	mustTool(t, "amqp-publish", "-u", u, "-r", q, "-b", "second")
	mustTool(t, "amqp-publish", "-u", u, "-e", "amq.direct", "-r", "nobody-binds-this", "-b", "dropped")

	// What amqp-publish sent, seen through amqp091-go.
	c := dial(t, s)
	ch := channel(t, c)
	waitMessageCount(t, ch, q, 2)
	m, ok := get(t, ch, q, false)
	if !ok || string(m.Body) != "first" || m.ContentType != "text/plain" || m.DeliveryMode != amqp.Persistent || m.Headers["k"] != "v" {
		t.Fatalf("message from amqp-publish: ok=%v body %q content-type %q mode %d headers %v", ok, m.Body, m.ContentType, m.DeliveryMode, m.Headers)
	}
	if err := ch.Nack(m.DeliveryTag, false, true); err != nil {
		t.Fatal(err)
	}
	waitMessageCount(t, ch, q, 2)

	if out := mustTool(t, "amqp-get", "-u", u, "-q", q); out != "first" {
		t.Fatalf("amqp-get printed %q, want first", out)
	}
	if out := mustTool(t, "amqp-consume", "-u", u, "-q", q, "-c", "1", "cat"); out != "second" {
		t.Fatalf("amqp-consume -c 1 cat printed %q, want second", out)
	}
	// The queue is empty now: amqp-get exits 2 and prints nothing.
	out, err := runTool(t, "amqp-get", "-u", u, "-q", q)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || out != "" {
		t.Fatalf("amqp-get on an empty queue: %q, %v; want exit status 2 and no output", out, err)
	}
	// amqp-consume acked what it consumed: nothing comes back after its connection closed.
	time.Sleep(quietPeriod)
	if n := messageCount(t, ch, q); n != 0 {
		t.Fatalf("%d messages left after amqp-get and amqp-consume", n)
	}
	if out := mustTool(t, "amqp-delete-queue", "-u", u, "-q", q); strings.TrimSpace(out) != "0" {
		t.Fatalf("amqp-delete-queue printed %q, want 0", out)
	}
}
