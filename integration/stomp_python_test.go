package integration

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPythonStomp runs python/stomp_suite.py with Debian's python3-stomp (stomp.py) against
// the STOMP listener: send/receive with receipts and acks, NACK redelivery, transactions and
// topic fan-out, each in STOMP 1.0, 1.1 and 1.2 (11 checks; NACK needs 1.1+).
func TestPythonStomp(t *testing.T) {
	t.Parallel()
	if out, err := exec.Command(debianPython, "-c", "import stomp").CombinedOutput(); err != nil {
		t.Fatalf("python3-stomp is not installed (%v: %s); %v", err, strings.TrimSpace(string(out)), ErrNoBinary)
	}
	_, addr := startSTOMP(t)
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("python", "stomp_suite.py"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, debianPython, script, host, port, Name(t, "py")).CombinedOutput()
	t.Logf("stomp_suite.py:\n%s", out)
	if err != nil {
		t.Fatalf("stomp_suite.py failed: %v", err)
	}
	if !strings.Contains(string(out), "stomp.py checks: 11 ok, 0 failed") {
		t.Fatalf("stomp_suite.py did not report all 11 checks ok")
	}
}
