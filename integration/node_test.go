package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNodeAmqplib runs node/amqp.test.mjs (publish, consume, confirms, topic routing, a 404)
// with amqplib under node's built-in test runner against the server.
func TestNodeAmqplib(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: %v; %v", err, ErrNoBinary)
	}
	dir, err := filepath.Abs("node")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "amqplib", "package.json")); err != nil {
		t.Fatalf("amqplib is not installed in integration/node (%v); %v", err, ErrNoBinary)
	}
	s := StartParley(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=tap", "amqp.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PARLEY_AMQP_URL="+s.URL, "PARLEY_TEST_PREFIX="+Name(t, "node"))
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("node --test failed: %v", err)
	}
	if !strings.Contains(string(out), "# pass 4") || !strings.Contains(string(out), "# fail 0") {
		t.Fatalf("node --test did not pass all 4 tests")
	}
}
