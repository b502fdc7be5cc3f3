package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func TestDispatch(t *testing.T) {
	var errOut bytes.Buffer
	if code := dispatch([]string{"nats"}, io.Discard, &errOut); code != exitUsage || !strings.Contains(errOut.String(), "unknown mode") {
		t.Errorf("unknown mode: exit %d, stderr %q", code, errOut.String())
	}
	// Every mode exists and rejects a bad URL scheme as bad usage before touching the network.
	for _, m := range []string{"amqp", "mqtt", "stomp", "idle"} {
		errOut.Reset()
		if code := dispatch([]string{m, "-url", "http://127.0.0.1:1/"}, io.Discard, &errOut); code != exitUsage || !strings.Contains(errOut.String(), "-url") {
			t.Errorf("%s with an http url: exit %d, stderr %q", m, code, errOut.String())
		}
	}
}

func TestAMQPFlagValidation(t *testing.T) {
	bad := [][]string{
		{"-consumers", "2", "-queues", "3"},       // a queue nobody consumes
		{"-fanout", "4", "-consumers", "2"},       // same through fan-out
		{"-autoack", "-multiple-ack", "10"},       // multiple acks need manual acks
		{"-prefetch", "5", "-multiple-ack", "10"}, // would stall
		{"-queue-type", "stream"},                 // not a queue type we drive
		{"-producers", "0", "-consumers", "0"},    // nothing to do
		{"-url", "http://localhost:5672/"},        // wrong scheme
		{"-duration", "1s", "extra"},              // stray argument
		{"-confirm", "-1"},                        // negative window
	}
	for _, args := range bad {
		if _, err := parseAMQPFlags(args, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	c, err := parseAMQPFlags([]string{"-queue-type", "quorum", "-fanout", "3", "-consumers", "3", "-size", "1", "-count", "100"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Durable || c.Queues != 3 || c.Size != headerLen || c.Duration != 0 || c.Timeout != 10*time.Minute {
		t.Fatalf("derived config wrong: %+v", c)
	}
	c, err = parseAMQPFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Duration != 10*time.Second || c.Timeout != c.Duration+c.Drain+30*time.Second {
		t.Fatalf("default bounds wrong: duration %v timeout %v", c.Duration, c.Timeout)
	}
}

// TestAgainstBroker runs short workloads end to end against a live broker when
// PARLEY_BENCH_AMQP_URL names one (e.g. amqp://guest:guest@127.0.0.1:5673/); no broker is
// started here, so `make test` skips it.
func TestAgainstBroker(t *testing.T) {
	url := os.Getenv("PARLEY_BENCH_AMQP_URL")
	if url == "" {
		t.Skip("PARLEY_BENCH_AMQP_URL not set")
	}
	shapes := [][]string{
		{"-producers", "1", "-consumers", "1", "-autoack"},
		{"-producers", "2", "-consumers", "2", "-confirm", "32", "-prefetch", "64", "-multiple-ack", "8", "-persistent", "-durable"},
		{"-producers", "1", "-consumers", "3", "-fanout", "3", "-autoack"},
		// The bench scenario's shape: single acks and confirms, both coalesced (corkconn.go).
		{"-producers", "1", "-consumers", "1", "-confirm", "256", "-prefetch", "256", "-persistent", "-durable"},
		// Prefetch 1: every ack must be written before the next delivery can come.
		{"-producers", "1", "-consumers", "1", "-confirm", "1", "-prefetch", "1"},
		// Paced: the producer naps between publishes, so it must flush before each nap.
		{"-producers", "1", "-consumers", "1", "-confirm", "16", "-rate", "3000"},
	}
	for _, shape := range shapes {
		args := append([]string{"-url", url, "-count", "3000", "-progress", "0", "-timeout", "60s"}, shape...)
		cfg, err := parseAMQPFlags(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
		res, err := benchAMQP(ctx, cfg, io.Discard)
		cancel()
		if err != nil {
			t.Fatalf("%v: %v", shape, err)
		}
		fanout := uint64(max(cfg.Fanout, 1))
		if res.Published != 3000 || res.Consumed != 3000*fanout || res.Accounting.Lost != 0 || res.Accounting.Duplicates != 0 ||
			res.TimedOut || len(res.Errors) > 0 || res.Latency.Count != res.Consumed {
			t.Errorf("%v: %+v", shape, res)
		}
		if cfg.Confirm > 0 && res.Confirmed != res.Published {
			t.Errorf("%v: confirmed %d of %d", shape, res.Confirmed, res.Published)
		}
	}
}
