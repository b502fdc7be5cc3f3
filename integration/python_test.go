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

// debianPython is Debian's interpreter, where python3-pika installs (not a pyenv python3).
const debianPython = "/usr/bin/python3"

// TestPythonPika runs python/pika_suite.py (publish, consume and ack, confirms, basic.get,
// RPC over direct reply-to) with Debian's python3-pika against the server.
func TestPythonPika(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(debianPython); err != nil {
		t.Fatalf("%s not found: %v; %v", debianPython, err, ErrNoBinary)
	}
	if out, err := exec.Command(debianPython, "-c", "import pika").CombinedOutput(); err != nil {
		t.Fatalf("python3-pika is not installed (%v: %s); %v", err, strings.TrimSpace(string(out)), ErrNoBinary)
	}
	s := StartParley(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("python", "pika_suite.py"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, debianPython, script, s.URL, Name(t, "py"))
	out, err := cmd.CombinedOutput()
	t.Logf("pika_suite.py:\n%s", out)
	if err != nil {
		t.Fatalf("pika_suite.py failed: %v", err)
	}
	if !strings.Contains(string(out), "pika checks: 6 ok, 0 failed") {
		t.Fatalf("pika_suite.py did not report all 6 checks ok")
	}
}
