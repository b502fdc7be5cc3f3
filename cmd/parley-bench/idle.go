package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The idle mode opens N connections that then do nothing but keep-alive, and reports what
// they cost the broker: its resident memory (VmRSS of -pid, read before the first connection
// and again after -hold with all of them open) divided by N, and how fast it accepted them.
// MQTT connections (tcp:// or mqtt:// URLs) are paho clients with a clean session; AMQP
// connections (amqp://) are amqp091-go connections with no channel open.

// IdleFigures is the outcome of an idle run.
type IdleFigures struct {
	Protocol       string  `json:"protocol"`
	Requested      int     `json:"requested"`
	Connected      int     `json:"connected"`
	Failed         int     `json:"failed"`
	ConnectSeconds float64 `json:"connect_seconds"`  // first dial to last connection established
	ConnectRate    float64 `json:"connects_per_sec"` // Connected / ConnectSeconds
	PID            int     `json:"pid,omitempty"`    // the broker process measured
	RSSBeforeKB    uint64  `json:"rss_before_kb"`    // VmRSS before the first connection
	RSSAfterKB     uint64  `json:"rss_after_kb"`     // VmRSS after -hold with every connection open
	BytesPerConn   float64 `json:"bytes_per_conn"`   // (after - before) / Connected
	FirstError     string  `json:"first_error,omitempty"`
	StillOpenAtEnd int     `json:"still_open_at_end"` // connections the broker had not closed when measured
}

type idleConfig struct {
	common
	Connections int
	Concurrency int
	PID         int
	Hold        time.Duration
	KeepAlive   time.Duration
}

func parseIdleFlags(args []string, stderr io.Writer) (idleConfig, error) {
	var c idleConfig
	fs := flag.NewFlagSet("parley-bench idle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.URL, "url", "tcp://127.0.0.1:1883", "broker URL: tcp:// or mqtt:// for MQTT, amqp:// for AMQP")
	fs.StringVar(&c.Label, "label", "", "name of this run in the report (default: the broker's host:port)")
	fs.IntVar(&c.Connections, "connections", 1000, "connections to open and hold")
	fs.IntVar(&c.Concurrency, "concurrency", 50, "connections being set up at once")
	fs.IntVar(&c.PID, "pid", 0, "the broker's process id, to read its VmRSS from /proc (0 = no memory figure)")
	fs.DurationVar(&c.Hold, "hold", 5*time.Second, "how long to hold every connection open before measuring memory")
	fs.DurationVar(&c.KeepAlive, "keepalive", 60*time.Second, "MQTT keep-alive / AMQP heartbeat of every connection")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Minute, "hard bound on the whole run")
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON instead of a table")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the load generator's own CPU profile here")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	// Reuse the shared URL and label checks with a do-nothing message workload.
	c.Producers = 1
	if _, err := c.common.normalise("tcp", "mqtt", "amqp"); err != nil {
		return c, err
	}
	switch {
	case c.Connections < 1 || c.Concurrency < 1:
		return c, badUsage("-connections and -concurrency must be >= 1")
	case c.PID < 0 || c.Hold < 0 || c.KeepAlive < 0:
		return c, badUsage("-pid, -hold and -keepalive must be >= 0")
	}
	return c, nil
}

// vmRSS reads a process's resident set size in KiB from /proc/<pid>/status.
func vmRSS(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read broker memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS %q: %w", v, err)
			}
			return kb, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// idleConn is one held connection: alive reports whether it is still open, close ends it.
type idleConn struct {
	alive func() bool
	close func()
}

func runIdle(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseIdleFlags(args, stderr)
	return runMode("idle", &cfg.common, err, stdout, stderr, func(ctx context.Context) (*Result, error) {
		return benchIdle(ctx, cfg, stderr)
	})
}

func benchIdle(ctx context.Context, cfg idleConfig, stderr io.Writer) (*Result, error) {
	proto := "mqtt"
	if strings.HasPrefix(cfg.URL, "amqp") {
		proto = "amqp"
	}
	fig := &IdleFigures{Protocol: proto, Requested: cfg.Connections, PID: cfg.PID}
	r := &Result{Mode: "idle", Label: cfg.Label, URL: redactedURL(cfg.URL),
		Shape: fmt.Sprintf("%d idle %s connections, keep-alive %v", cfg.Connections, proto, cfg.KeepAlive), Idle: fig}
	if cfg.PID > 0 {
		kb, err := vmRSS(cfg.PID)
		if err != nil {
			return nil, err
		}
		fig.RSSBeforeKB = kb
	}

	runID := newRunID()
	dialOne := func(i int) (idleConn, error) {
		if proto == "amqp" {
			conn, err := amqp.DialConfig(cfg.URL, amqp.Config{
				Heartbeat: cfg.KeepAlive, Locale: "en_US", Dial: amqp.DefaultDial(10 * time.Second),
				Properties: amqp.Table{"connection_name": fmt.Sprintf("parley-bench idle %d", i), "product": "parley-bench"},
			})
			if err != nil {
				return idleConn{}, fmt.Errorf("dial %s: %w", redactedURL(cfg.URL), err)
			}
			return idleConn{alive: func() bool { return !conn.IsClosed() }, close: func() { _ = conn.Close() }}, nil
		}
		client, lost, err := connectMQTT(ctx, mqttOptions(cfg.URL, fmt.Sprintf("pb-%s-i%d", runID, i), cfg.KeepAlive))
		if err != nil {
			return idleConn{}, err
		}
		return idleConn{
			alive: func() bool { return len(lost) == 0 && client.IsConnectionOpen() },
			close: func() { client.Disconnect(0) },
		}, nil
	}

	conns := make([]idleConn, cfg.Connections)
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	begin := time.Now()
	var lastUp atomic.Int64
	progressDone := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-progressDone:
				return
			case <-t.C:
				fmt.Fprintf(stderr, "%s t=%5.1fs  connecting: %d of %d started, %d failed\n",
					cfg.Label, time.Since(begin).Seconds(), min(next.Load(), int64(cfg.Connections)), cfg.Connections, failed.Load())
			}
		}
	}()
	for range min(cfg.Concurrency, cfg.Connections) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= cfg.Connections {
					return
				}
				c, err := dialOne(i)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				conns[i] = c
				lastUp.Store(int64(time.Since(begin)))
			}
		}()
	}
	wg.Wait()
	close(progressDone)
	defer func() {
		// Close concurrently: one by one, 10,000 closes would take longer than the run.
		var cw sync.WaitGroup
		work := make(chan idleConn)
		for range min(cfg.Concurrency, cfg.Connections) {
			cw.Add(1)
			go func() {
				defer cw.Done()
				for c := range work {
					c.close()
				}
			}()
		}
		for _, c := range conns {
			if c.close != nil {
				work <- c
			}
		}
		close(work)
		cw.Wait()
	}()
	fig.Failed = int(failed.Load())
	fig.Connected = cfg.Connections - fig.Failed
	if v := firstErr.Load(); v != nil {
		fig.FirstError = v.(string)
	}
	fig.ConnectSeconds = time.Duration(lastUp.Load()).Seconds()
	if fig.ConnectSeconds > 0 {
		fig.ConnectRate = float64(fig.Connected) / fig.ConnectSeconds
	}
	if ctx.Err() != nil {
		r.TimedOut = true
		return r, nil
	}
	fmt.Fprintf(stderr, "%s: %d connected (%.0f/s), %d failed; holding %v\n", cfg.Label, fig.Connected, fig.ConnectRate, fig.Failed, cfg.Hold)
	select {
	case <-time.After(cfg.Hold):
	case <-ctx.Done():
		r.TimedOut = true
	}
	for _, c := range conns {
		if c.alive != nil && c.alive() {
			fig.StillOpenAtEnd++
		}
	}
	if cfg.PID > 0 {
		kb, err := vmRSS(cfg.PID)
		if err != nil {
			return r, err
		}
		fig.RSSAfterKB = kb
		if fig.Connected > 0 {
			fig.BytesPerConn = (float64(fig.RSSAfterKB) - float64(fig.RSSBeforeKB)) * 1024 / float64(fig.Connected)
		}
	}
	return r, nil
}
