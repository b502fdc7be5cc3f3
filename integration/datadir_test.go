package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runParleyOnce runs the parley binary with args and returns its exit code and output; it must
// exit by itself (a refusal), within a bound.
func runParleyOnce(t *testing.T, args ...string) (int, string) {
	t.Helper()
	bin, err := buildParley()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{"--amqp", "127.0.0.1:0", "--amqps", "off", "--mqtt", "off", "--mqtts", "off",
		"--stomp", "off", "--stomps", "off", "--http", "off", "--ws-stomp", "off", "--ws-mqtt", "off",
		"--ws", "off", "--prometheus", "off", "--cluster", "off"}, args...)
	out, err := exec.CommandContext(ctx, bin, all...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("parley did not exit by itself: %v\n%s", err, out)
	}
	return 0, string(out)
}

// A data directory already in use by a running parley is refused with exit code 2 and a line
// that says so; the running one keeps serving.
func TestDataDirInUseIsRefused(t *testing.T) {
	s := StartParley(t)
	s.SkipIfExternal(t, "it needs the broker's data directory")
	code, out := runParleyOnce(t, "--data-dir", s.dataDir)
	if code != 2 || !strings.Contains(out, "in use") {
		t.Fatalf("exit %d, output %q; want exit 2 saying the directory is in use", code, out)
	}
	c := dial(t, s)
	c.Close()
}

// A data directory of an unknown format version is refused with exit code 2, untouched.
func TestDataDirUnknownFormatIsRefused(t *testing.T) {
	if ExternalURL() != "" {
		t.Skip("it runs parley itself")
	}
	dir := t.TempDir()
	format := filepath.Join(dir, "FORMAT")
	if err := os.WriteFile(format, []byte("parley-data 99\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runParleyOnce(t, "--data-dir", dir)
	if code != 2 || !strings.Contains(strings.ToLower(out), "format") {
		t.Fatalf("exit %d, output %q; want exit 2 naming the format", code, out)
	}
	if got, _ := os.ReadFile(format); string(got) != "parley-data 99\n" {
		t.Fatalf("FORMAT was changed to %q", got)
	}
}
