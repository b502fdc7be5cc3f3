package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// chromiumPath is Debian's chromium, which scripts/install-test-deps.sh installs.
const chromiumPath = "/usr/bin/chromium"

// browserDir holds the check pages, the playwright driver and their npm packages.
const browserDir = "browser"

// needBrowser fails (not skips: make test installs them) when chromium or the npm packages
// are missing.
func needBrowser(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s: %v; %v", chromiumPath, err, ErrNoBinary)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node: %v; %v", err, ErrNoBinary)
	}
	for _, p := range []string{"node_modules/playwright-core", "node_modules/@stomp/stompjs", "node_modules/mqtt"} {
		if _, err := os.Stat(filepath.Join(browserDir, p)); err != nil {
			t.Fatalf("%s: %v; %v", p, err, ErrNoBinary)
		}
	}
}

// servePages serves the check pages and the client libraries over HTTP on 127.0.0.1 (a page
// from file:// has Origin "null", which no WebSocket server should accept).
func servePages(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	lib := map[string]string{
		"/lib/stomp.umd.min.js": "node_modules/@stomp/stompjs/bundles/stomp.umd.min.js",
		"/lib/mqtt.min.js":      "node_modules/mqtt/dist/mqtt.min.js",
	}
	for path, file := range lib {
		file := filepath.Join(browserDir, file)
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/javascript")
			http.ServeFile(w, r, file)
		})
	}
	for _, page := range []string{"stomp.html", "mqtt.html"} {
		file := filepath.Join(browserDir, page)
		mux.HandleFunc("/"+page, func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, file) })
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// runBrowser opens pageURL in headless Chromium through drive.mjs. onReady runs once the page
// has subscribed; the page's received messages are returned. The screenshot is kept in the
// test's artifact directory (logged).
func runBrowser(t *testing.T, pageURL string, onReady func()) []string {
	t.Helper()
	dir := artifactDir(t)
	shot := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".png")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "drive.mjs", pageURL, shot, "30000")
	cmd.Dir = browserDir
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var received []string
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		lines = append(lines, line)
		switch {
		case line == "READY":
			onReady()
		case strings.HasPrefix(line, "DONE "):
			received = parseJSONStrings(strings.TrimPrefix(line, "DONE "))
		}
	}
	err = cmd.Wait()
	t.Logf("browser output:\n%s", strings.Join(lines, "\n"))
	t.Logf("screenshot: %s", shot)
	if err != nil {
		t.Fatalf("browser run failed: %v", err)
	}
	return received
}

// artifactDir is where test artifacts (screenshots) go: $PARLEY_TEST_ARTIFACTS, or
// integration/testoutput (gitignored), kept after the run.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("PARLEY_TEST_ARTIFACTS")
	if dir == "" {
		dir = "testoutput"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// parseJSONStrings reads a JSON array of strings without quotes or escapes inside (our
// message bodies).
func parseJSONStrings(s string) []string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "[")
	s = strings.TrimSuffix(s, "]")
	if s == "" {
		return nil
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		out = append(out, strings.Trim(p, `"`))
	}
	return out
}

// TestBrowserWebSTOMP: a page in headless Chromium using @stomp/stompjs over Web-STOMP
// (ws://127.0.0.1:PORT/ws, subprotocol v12.stomp) subscribes to a /topic/, receives what an
// amqp091-go producer publishes to amq.topic, and sends each message to a /queue/ that an
// amqp091-go consumer reads.
func TestBrowserWebSTOMP(t *testing.T) {
	t.Parallel()
	needBrowser(t)
	pages := servePages(t)
	wsAddr := freeAddr(t)
	// The page comes from another port of 127.0.0.1: a cross-origin page the configuration
	// must allow (the default is same host and port only).
	s := StartParley(t, "--ws-stomp", wsAddr, "--config", writeConfig(t, "ws_allowed_origins: [\"127.0.0.1:*\"]\n"))
	s.SkipIfExternal(t, "configures the Web-STOMP listener")
	waitListening(t, wsAddr)
	ch := channel(t, dial(t, s))
	key := Name(t, "key")
	// Declared as the page's /queue/ destination declares it (durable, as RabbitMQ's plugin
	// does), so both declarations are equivalent.
	q := Name(t, "from-browser")
	cleanupQueue(t, s, q)
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries := consume(t, ch, q, "", true, nil)
	const n = 3
	url := fmt.Sprintf("%s/stomp.html?ws=ws://%s/ws&topic=/topic/%s&queue=/queue/%s&n=%d", pages, wsAddr, key, q, n)
	received := runBrowser(t, url, func() {
		for i := 0; i < n; i++ {
			publish(t, ch, "amq.topic", key, amqp.Publishing{ContentType: "text/plain", Body: []byte(fmt.Sprintf("m%d", i))})
		}
	})
	want := []string{"m0", "m1", "m2"}
	if !equalStrings(received, want) {
		t.Fatalf("page received %v, want %v", received, want)
	}
	var echoed []string
	for i := 0; i < n; i++ {
		d := recv(t, deliveries)
		if d.Headers["x-from"] != "browser" {
			t.Fatalf("echo without the page's header: %+v", d.Headers)
		}
		echoed = append(echoed, string(d.Body))
	}
	if !equalStrings(echoed, []string{"echo:m0", "echo:m1", "echo:m2"}) {
		t.Fatalf("AMQP consumer got %v", echoed)
	}
}

// TestBrowserWebMQTT: a page in headless Chromium using mqtt.js over Web-MQTT
// (ws://127.0.0.1:PORT/ws, subprotocol mqtt) subscribes to a topic, receives what an
// amqp091-go producer publishes to amq.topic (a/b <-> a.b), and publishes each message to a
// topic an AMQP queue bound to amq.topic reads.
func TestBrowserWebMQTT(t *testing.T) {
	t.Parallel()
	needBrowser(t)
	pages := servePages(t)
	wsAddr := freeAddr(t)
	s := StartParley(t, "--ws-mqtt", wsAddr, "--config", writeConfig(t, "ws_allowed_origins: [\"127.0.0.1:*\"]\n"))
	s.SkipIfExternal(t, "configures the Web-MQTT listener")
	waitListening(t, wsAddr)
	ch := channel(t, dial(t, s))
	topic := strings.ReplaceAll(Name(t, "t"), ".", "-")
	q := declareQueue(t, s, ch, "from-browser", nil)
	if err := ch.QueueBind(q, topic+".replies", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries := consume(t, ch, q, "", true, nil)
	const n = 3
	url := fmt.Sprintf("%s/mqtt.html?ws=ws://%s/ws&topic=%s/in&reply=%s/replies&n=%d", pages, wsAddr, topic, topic, n)
	received := runBrowser(t, url, func() {
		for i := 0; i < n; i++ {
			publish(t, ch, "amq.topic", topic+".in", amqp.Publishing{Body: []byte(fmt.Sprintf("m%d", i))})
		}
	})
	if !equalStrings(received, []string{"m0", "m1", "m2"}) {
		t.Fatalf("page received %v", received)
	}
	if got := recvBodies(t, deliveries, n); !equalStrings(got, []string{"echo:m0", "echo:m1", "echo:m2"}) {
		t.Fatalf("AMQP consumer got %v", got)
	}
}
