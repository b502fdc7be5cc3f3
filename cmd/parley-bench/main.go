// Command parley-bench is the load generator behind `make bench`. It speaks to any broker
// given its URL — Parley or RabbitMQ alike — so both are measured by the same client code in
// the same run. It owns the workload shapes (producers, consumers, queues, fan-out, sizes,
// persistence, confirms, acks, rates), the accounting of every message (lost, duplicated,
// redelivered) and the end-to-end latency histogram; it owns no broker logic.
//
// Each protocol is a subcommand (`parley-bench amqp|mqtt|stomp|idle ...`); they share one run
// engine (engine.go) and one accounting, histogram and report (tracker.go, histogram.go,
// report.go). Progress goes to stderr, results to stdout as a table, or as JSON with -json.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
)

// mode is one subcommand: it parses its own flags and returns the process exit code.
type mode struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// Exit codes: 0 the run completed (even if it found losses — the report says so),
// 1 the run failed (broker unreachable, channel closed), 2 bad usage or mode not available.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	defaultMode = "amqp"
)

func modes() map[string]mode {
	return map[string]mode{
		"amqp":  {"AMQP 0-9-1 producers and consumers", runAMQP},
		"mqtt":  {"MQTT 3.1.1 publishers and subscribers (paho), QoS 0/1/2, fan-in, fan-out, shared", runMQTT},
		"stomp": {"STOMP 1.0-1.2 senders and subscribers (go-stomp) over TCP or WebSocket, queue or topic", runSTOMP},
		"idle":  {"many idle MQTT or AMQP connections: broker memory per connection, connect rate", runIdle},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: parley-bench <mode> [flags]   (parley-bench <mode> -h for its flags)")
	ms := modes()
	names := make([]string, 0, len(ms))
	for n := range ms {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-6s %s\n", n, ms[n].summary)
	}
}

func main() {
	// The client library allocates per message; at broker-saturating rates the default GC
	// pace costs the load generator CPU it shares with the broker under test. A lazier GC
	// (unless GOGC says otherwise) leaves more of the machine to the broker.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	// Flags without a mode mean AMQP, so `parley-bench -url ...` keeps working for the
	// protocol every broker here speaks.
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "-help" && args[0] != "--help" {
		return modes()[defaultMode].run(args, stdout, stderr)
	}
	m, ok := modes()[args[0]]
	if !ok {
		if args[0] != "-h" && args[0] != "-help" && args[0] != "--help" && args[0] != "help" {
			fmt.Fprintf(stderr, "parley-bench: unknown mode %q\n", args[0])
		}
		usage(stderr)
		return exitUsage
	}
	return m.run(args[1:], stdout, stderr)
}
