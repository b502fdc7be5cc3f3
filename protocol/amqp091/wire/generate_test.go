package wire

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestGeneratedCodeIsCurrent runs the generator the way `go generate` does and checks that it
// reproduces the committed methods_gen.go byte for byte.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "methods_gen.go")
	cmd := exec.CommandContext(ctx, goTool, "run", "./internal/gen", "-out", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./internal/gen: %v\n%s", err, msg)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("methods_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("methods_gen.go is stale: run go generate ./protocol/amqp091/wire/")
	}
}

// TestEveryMethodRoundTrips encodes the zero value of every generated method and decodes it.
func TestEveryMethodRoundTrips(t *testing.T) {
	n := 0
	for c := range 100 {
		for m := range 200 {
			meth := newMethod(uint16(c), uint16(m))
			if meth == nil {
				continue
			}
			n++
			enc := meth.Append(nil)
			got, err := DecodeMethod(enc)
			if err != nil {
				t.Fatalf("%s: %v", meth.Name(), err)
			}
			if got.ClassID() != uint16(c) || got.MethodID() != uint16(m) || !bytes.Equal(got.Append(nil), enc) {
				t.Fatalf("%s: round trip", meth.Name())
			}
			var s methodSet
			if s.get(uint16(c), uint16(m)) == nil {
				t.Fatalf("%s missing from methodSet", meth.Name())
			}
		}
	}
	// RabbitMQ's extended 0-9-1: connection 14, channel 6, exchange 8, queue 10, basic 18,
	// tx 6, confirm 2.
	if n != 64 {
		t.Fatalf("%d methods, want 64", n)
	}
}
