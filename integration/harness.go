// Package integration holds Parley's black-box tests: real client libraries (Go amqp091-go,
// Python pika, Node amqplib, rabbitmq-c's command-line tools) over real sockets against a real
// `parley` process.
//
// Every test describes RabbitMQ's behaviour. Setting PARLEY_TEST_AMQP_URL to a RabbitMQ URL
// (amqp://guest:guest@127.0.0.1:5673/) runs the same tests against that broker instead of a
// parley process, which is how each test is proved to describe what RabbitMQ does:
//
//	PARLEY_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5673/ go test ./integration/ -count=1
//
// Without it, StartParley builds ./cmd/parley once per test binary and starts one process per
// test on ports the test picks on 127.0.0.1.
package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// ExternalURLEnv names the environment variable that points the suite at an already running
// broker instead of a parley process it starts itself.
const ExternalURLEnv = "PARLEY_TEST_AMQP_URL"

// startTimeout bounds how long a parley process may take to accept AMQP connections.
const startTimeout = 20 * time.Second

// Server is one broker under test: a parley process this test started, or the external broker
// named by PARLEY_TEST_AMQP_URL.
type Server struct {
	// AMQPAddr is host:port of the AMQP listener.
	AMQPAddr string
	// URL is the AMQP URL with the default guest credentials, ending in "/" (vhost "/").
	URL string
	// External is true when the server was not started by the test (PARLEY_TEST_AMQP_URL).
	External bool

	t       testing.TB
	binary  string
	dataDir string
	logPath string
	args    []string
	// wrap runs the binary through another command (ip netns exec NS), which must exec it, so
	// the process the test signals is parley itself.
	wrap []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	logFile *os.File
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// buildParley compiles ./cmd/parley once per test binary into a temporary directory that
// lives as long as the process (test binaries run from a temp dir the go tool removes).
func buildParley() (string, error) {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "parley-integration-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "parley")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", buildPath, "github.com/parleymq/parley/cmd/parley")
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/parley: %v\n%s", err, out.String())
		}
	})
	return buildPath, buildErr
}

// ExternalURL returns PARLEY_TEST_AMQP_URL, or "" when the suite starts its own parley.
func ExternalURL() string { return os.Getenv(ExternalURLEnv) }

// StartParley returns a broker for the test: the external one when PARLEY_TEST_AMQP_URL is set,
// otherwise a fresh parley process with its data in t.TempDir(), stopped at t.Cleanup. The
// process's log goes to a file whose tail is printed when the test failed.
func StartParley(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	if u := ExternalURL(); u != "" {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatalf("%s=%q: %v", ExternalURLEnv, u, err)
		}
		host := pu.Host
		if pu.Port() == "" {
			host = net.JoinHostPort(pu.Hostname(), "5672")
		}
		return &Server{AMQPAddr: host, URL: u, External: true, t: t}
	}
	bin, err := buildParley()
	if err != nil {
		t.Fatalf("building parley: %v", err)
	}
	s := &Server{
		t:       t,
		binary:  bin,
		dataDir: t.TempDir(),
		args:    extraArgs,
	}
	s.logPath = filepath.Join(t.TempDir(), "parley.log")
	var lastErr error
	// A port picked free can be taken by someone else before parley binds it: retry then.
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("picking a port: %v", err)
		}
		s.AMQPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.URL = "amqp://guest:guest@" + s.AMQPAddr + "/"
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		s.printLogTail(t, 60)
		t.Fatalf("starting parley: %v", lastErr)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			s.printLogTail(t, 60)
		}
	})
	return s
}

// SkipIfExternal skips a test that needs to control the broker process (kill, restart).
func (s *Server) SkipIfExternal(t testing.TB, why string) {
	t.Helper()
	if s.External {
		t.Skipf("needs a parley process started by the test (%s); %s points at an external broker", why, ExternalURLEnv)
	}
}

func (s *Server) commandArgs() []string {
	args := []string{
		"--data-dir", s.dataDir,
		"--log-level", "info",
		"--amqp", s.AMQPAddr,
		"--amqps", "off", "--mqtt", "off", "--mqtts", "off",
		"--stomp", "off", "--stomps", "off", "--http", "off",
		"--ws-stomp", "off", "--ws-mqtt", "off", "--ws", "off",
		"--prometheus", "off", "--cluster", "off",
	}
	return append(args, s.args...)
}

// start launches the process and waits until the AMQP port accepts or the process exits.
func (s *Server) start() error {
	lf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(lf, "=== %s %s %s\n", strings.Join(s.wrap, " "), s.binary, strings.Join(s.commandArgs(), " "))
	argv := append(append(slices.Clone(s.wrap), s.binary), s.commandArgs()...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	// The process must not pick up a developer's PARLEY_* settings (config file, listeners).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PARLEY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited, s.logFile = cmd, exited, lf
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			s.closeLog()
			return fmt.Errorf("parley exited before accepting on %s: %v", s.AMQPAddr, cmd.ProcessState)
		default:
		}
		// Up when the AMQP port accepts and the listener is this process's own: a port that
		// answers may be another process's that took it while this one was down (a restart
		// after a kill leaves it free for seconds while the broker recovers), and a client
		// would then talk to the wrong broker (TestDeepQueue once saw "queue NOT_FOUND" after
		// its restart). parley then fails to bind and exits, which the loop sees.
		c, err := net.DialTimeout("tcp", s.AMQPAddr, 500*time.Millisecond)
		if err == nil {
			c.Close()
			if err = listenerOf(cmd.Process.Pid, s.AMQPAddr); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("parley did not accept on %s within %v: %v", s.AMQPAddr, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) closeLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logFile != nil {
		s.logFile.Close()
		s.logFile = nil
	}
}

// signal sends sig and waits (bounded) for the process to exit; it SIGKILLs when it lingers.
func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	s.closeLog()
}

// stop ends the process gracefully (SIGTERM), or by SIGKILL when it does not stop in time.
func (s *Server) stop() { s.signal(syscall.SIGTERM) }

// Kill ends the process with SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.t.Helper()
	if s.External {
		s.t.Fatalf("Kill on an external broker")
	}
	s.signal(syscall.SIGKILL)
}

// Restart stops the process (if it still runs) and starts it again on the same port and data
// directory: durable state must survive it.
func (s *Server) Restart() {
	s.t.Helper()
	if s.External {
		s.t.Fatalf("Restart on an external broker")
	}
	s.stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("restarting parley: %v", err)
	}
}

// Running reports whether the process started by the test is still alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Pid is the process id of the running broker process (0 for an external broker).
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// LogPath is the file the process writes its log to ("" for an external broker).
func (s *Server) LogPath() string { return s.logPath }

func (s *Server) printLogTail(t testing.TB, lines int) {
	if s.logPath == "" {
		return
	}
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		t.Logf("parley log %s: %v", s.logPath, err)
		return
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	t.Logf("last %d lines of parley's log (%s):\n%s", len(all), s.logPath, strings.Join(all, "\n"))
}

var nameSeq atomic.Uint64

// Name returns a queue or exchange name unique to this test run, so tests can share one
// external broker: "it-<test>-<what>-<pid>-<n>".
func Name(t testing.TB, what string) string {
	base := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	if len(base) > 80 {
		base = base[len(base)-80:]
	}
	return fmt.Sprintf("it-%s-%s-%d-%d", base, what, os.Getpid(), nameSeq.Add(1))
}

// ErrNoBinary reports a tool the suite needs but cannot find.
var ErrNoBinary = errors.New("run scripts/install-test-deps.sh")
