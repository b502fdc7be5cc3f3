package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMQTTFlagValidation(t *testing.T) {
	bad := [][]string{
		{"-qos", "3"},                 // no such QoS
		{"-qos", "1", "-window", "0"}, // nothing could ever be published
		{"-window", "70000"},          // more than 16-bit packet identifiers
		{"-url", "amqp://127.0.0.1/"}, // another protocol
		{"-keepalive", "-1s"},         // negative
		{"-producers", "0", "-consumers", "0"},
	}
	for _, args := range bad {
		if _, err := parseMQTTFlags(args, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	c, err := parseMQTTFlags([]string{"-qos", "0", "-window", "10", "-shared", "-consumers", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Window != 0 || !strings.Contains(c.shape(), "shared") || c.Label != "127.0.0.1:1883" {
		t.Fatalf("derived config wrong: %+v shape %q", c, c.shape())
	}
}

func TestSTOMPFlagValidation(t *testing.T) {
	bad := [][]string{
		{"-dest", "exchange"},
		{"-ack", "none"},
		{"-ack", "auto", "-multiple-ack", "5"}, // cumulative acks need ack client
		{"-ack", "client", "-multiple-ack", "50", "-prefetch", "10"}, // would stall
		{"-receipt", "-1"},
		{"-url", "tcp2://127.0.0.1:61613"},
	}
	for _, args := range bad {
		if _, err := parseSTOMPFlags(args, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	c, err := parseSTOMPFlags([]string{"-url", "ws://127.0.0.1:15674/ws", "-ack", "client", "-multiple-ack", "8"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.shape(), "websocket") || !strings.Contains(c.shape(), "ack=client/8") {
		t.Fatalf("shape %q", c.shape())
	}
}

func TestIdleFlagValidation(t *testing.T) {
	for _, args := range [][]string{{"-connections", "0"}, {"-pid", "-3"}, {"-url", "stomp://127.0.0.1:61613"}} {
		if _, err := parseIdleFlags(args, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	kb, err := vmRSS(os.Getpid())
	if err != nil || kb == 0 {
		t.Fatalf("VmRSS of this test: %d KiB, %v", kb, err)
	}
}

// checkRun fails t unless res delivered every owed message exactly once (lossless) or, for
// QoS 0, at least delivered nothing twice and nothing it was not sent.
func checkRun(t *testing.T, name string, res *Result, lossless bool, copies uint64) {
	t.Helper()
	a := res.Accounting
	switch {
	case res.TimedOut || len(res.Errors) > 0:
		t.Errorf("%s: timed out %v, errors %v", name, res.TimedOut, res.Errors)
	case res.Published == 0:
		t.Errorf("%s: nothing published", name)
	case a.Duplicates != 0 || a.Unexpected != 0 || res.Foreign != 0:
		t.Errorf("%s: dup %d unexpected %d foreign %d", name, a.Duplicates, a.Unexpected, res.Foreign)
	case res.Latency.Count != res.Consumed:
		t.Errorf("%s: %d latencies for %d deliveries", name, res.Latency.Count, res.Consumed)
	case lossless && (a.Lost != 0 || res.Consumed != res.Published*copies || (res.Confirms && res.Confirmed != res.Published)):
		t.Errorf("%s: published %d confirmed %d consumed %d (want %d copies each) lost %d", name,
			res.Published, res.Confirmed, res.Consumed, copies, a.Lost)
	}
}

// mqttShapes are run against every MQTT broker a test has: fan-in, fan-out, shared, each QoS.
// QoS 2 uses a window of 16: Mosquitto's default lets a client have 20 QoS 2 messages in
// flight and disconnects one that sends more.
var mqttShapes = []struct {
	args     []string
	lossless bool
	copies   uint64
}{
	{[]string{"-qos", "0", "-producers", "1", "-consumers", "1", "-rate", "2000"}, false, 1},
	{[]string{"-qos", "1", "-producers", "4", "-consumers", "1"}, true, 1},
	{[]string{"-qos", "1", "-producers", "1", "-consumers", "3"}, true, 3},
	{[]string{"-qos", "2", "-producers", "2", "-consumers", "2", "-window", "16"}, true, 2},
	{[]string{"-qos", "1", "-producers", "1", "-consumers", "3", "-shared"}, true, 1},
}

func runMQTTShapes(t *testing.T, url string) {
	for _, shape := range mqttShapes {
		args := append([]string{"-url", url, "-count", "2000", "-progress", "0", "-timeout", "60s", "-drain", "3s"}, shape.args...)
		cfg, err := parseMQTTFlags(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
		res, err := benchMQTT(ctx, cfg, io.Discard)
		cancel()
		if err != nil {
			t.Fatalf("%v: %v", shape.args, err)
		}
		checkRun(t, fmt.Sprint(shape.args), res, shape.lossless, shape.copies)
	}
}

// startMosquitto runs /usr/sbin/mosquitto on a free loopback port for the test's lifetime and
// returns the port and the process id.
func startMosquitto(t *testing.T) (int, int) {
	t.Helper()
	bin := "/usr/sbin/mosquitto"
	if _, err := os.Stat(bin); err != nil {
		t.Skip("no /usr/sbin/mosquitto (apt-get install mosquitto; scripts/install-test-deps.sh does)")
	}
	for attempt := 0; attempt < 5; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		dir := t.TempDir()
		conf := filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\n", port)), 0o644); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		cmd := exec.Command(bin, "-c", conf)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatalf("start mosquitto: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				deadline = time.Time{} // port taken meanwhile: try another
				continue
			default:
			}
			if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
				_ = c.Close()
				return port, cmd.Process.Pid
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
	}
	t.Fatal("mosquitto did not start on a free port in 5 attempts")
	return 0, 0
}

// TestMQTTAgainstMosquitto runs the MQTT and idle modes end to end against a real Mosquitto
// this test starts itself, so the modes are exercised by every `make test` on a machine with
// mosquitto installed.
func TestMQTTAgainstMosquitto(t *testing.T) {
	port, pid := startMosquitto(t)
	url := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	runMQTTShapes(t, url)

	cfg, err := parseIdleFlags([]string{"-url", url, "-connections", "200", "-pid", fmt.Sprint(pid), "-hold", "200ms", "-timeout", "60s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	res, err := benchIdle(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f := res.Idle
	if f.Connected != 200 || f.Failed != 0 || f.StillOpenAtEnd != 200 || f.RSSBeforeKB == 0 || f.RSSAfterKB == 0 || f.ConnectRate <= 0 {
		t.Fatalf("idle: %+v", f)
	}
}

// TestMQTTAgainstBroker and TestSTOMPAgainstBroker run against a live broker when
// PARLEY_BENCH_MQTT_URL (tcp://host:port), PARLEY_BENCH_STOMP_URL (stomp://user:pass@host:port)
// or PARLEY_BENCH_WS_STOMP_URL (ws://host:port/ws) names one; `make test` starts none.
func TestMQTTAgainstBroker(t *testing.T) {
	url := os.Getenv("PARLEY_BENCH_MQTT_URL")
	if url == "" {
		t.Skip("PARLEY_BENCH_MQTT_URL not set")
	}
	runMQTTShapes(t, url)
}

func TestSTOMPAgainstBroker(t *testing.T) {
	urls := map[string]string{}
	for _, env := range []string{"PARLEY_BENCH_STOMP_URL", "PARLEY_BENCH_WS_STOMP_URL"} {
		if v := os.Getenv(env); v != "" {
			urls[env] = v
		}
	}
	if len(urls) == 0 {
		t.Skip("neither PARLEY_BENCH_STOMP_URL nor PARLEY_BENCH_WS_STOMP_URL set")
	}
	shapes := []struct {
		args   []string
		copies uint64
	}{
		{[]string{"-producers", "1", "-consumers", "1"}, 1},
		{[]string{"-producers", "2", "-consumers", "2", "-receipt", "32", "-persistent", "-ack", "client", "-multiple-ack", "8", "-prefetch", "64"}, 1},
		{[]string{"-producers", "1", "-consumers", "3", "-dest", "topic", "-ack", "client-individual", "-receipt", "16"}, 3},
	}
	for env, url := range urls {
		for _, shape := range shapes {
			args := append([]string{"-url", url, "-count", "2000", "-progress", "0", "-timeout", "60s", "-drain", "3s"}, shape.args...)
			cfg, err := parseSTOMPFlags(args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
			res, err := benchSTOMP(ctx, cfg, io.Discard)
			cancel()
			if err != nil {
				t.Fatalf("%s %v: %v", env, shape.args, err)
			}
			checkRun(t, env+fmt.Sprint(shape.args), res, true, shape.copies)
		}
	}
}

// TestIdleAMQPAgainstBroker holds AMQP connections open against PARLEY_BENCH_AMQP_URL.
func TestIdleAMQPAgainstBroker(t *testing.T) {
	url := os.Getenv("PARLEY_BENCH_AMQP_URL")
	if url == "" {
		t.Skip("PARLEY_BENCH_AMQP_URL not set")
	}
	cfg, err := parseIdleFlags([]string{"-url", url, "-connections", "100", "-hold", "100ms", "-timeout", "60s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	res, err := benchIdle(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f := res.Idle; f.Connected != 100 || f.StillOpenAtEnd != 100 {
		t.Fatalf("idle: %+v", f)
	}
}
