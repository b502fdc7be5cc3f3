package integration

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// The harness's ports: each is reserved against every other harness (a lock another open of the
// file cannot take, as another test binary's would not), and a listener answering on a port
// counts as a started process only if it is that process's own.
func TestHarnessPortsAndReadiness(t *testing.T) {
	p1, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	p2, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	if p1 == p2 {
		t.Fatalf("port %d handed out twice", p1)
	}
	if ok, err := reservePort(p1); ok || err != nil {
		t.Fatalf("port %d reserved again: %v %v", p1, ok, err)
	}
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "parley-test-ports", strconv.Itoa(p1)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("another holder could lock port %d's reservation: %v", p1, err)
	}

	a1 := net.JoinHostPort("127.0.0.1", strconv.Itoa(p1))
	a2 := net.JoinHostPort("127.0.0.1", strconv.Itoa(p2))
	ln, err := net.Listen("tcp", a1)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := listenerOf(os.Getpid(), a1); err != nil {
		t.Fatalf("this process's listener not recognised: %v", err)
	}
	if err := listenerOf(os.Getpid(), a2); err == nil {
		t.Fatal("a port nobody listens on counted as this process's")
	}
	// Another process listens on p2: it is its listener, not this process's.
	cmd := exec.Command("python3", "-c", `import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
time.sleep(30)`, strconv.Itoa(p2))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("no python3 to hold a port in another process: %v", err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "listening\n" {
		t.Fatalf("helper process: %q %v", line, err)
	}
	if err := listenerOf(os.Getpid(), a2); err == nil {
		t.Fatal("another process's listener counted as this process's")
	}
	if err := listenerOf(cmd.Process.Pid, a2); err != nil {
		t.Fatalf("the other process's listener not recognised: %v", err)
	}
}

// A broker restarted on a port another process took while it was down is not taken for
// started: a client would talk to the other process (TestDeepQueue once got "queue NOT_FOUND"
// from another test's broker after its restart). The restart fails, saying so.
func TestRestartOnTakenPortIsNoStart(t *testing.T) {
	s := StartParley(t)
	s.SkipIfExternal(t, "restarts the broker")
	s.Kill()
	ln, err := net.Listen("tcp", s.AMQPAddr)
	if err != nil {
		t.Fatalf("taking the killed broker's port: %v", err)
	}
	defer ln.Close()
	if err := s.start(); err == nil {
		t.Fatalf("a restart on %s, which another listener holds, counted as started", s.AMQPAddr)
	} else {
		t.Logf("restart refused: %v", err)
	}
}
