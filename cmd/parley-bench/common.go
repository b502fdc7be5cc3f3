package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"
)

// common is the part of a workload every message mode shares: where to connect, how many
// publishing and consuming connections, message size, how long or how many, pacing, and the
// run's bounds and output. Each mode embeds it, so these flags mean the same in every mode.
type common struct {
	URL        string
	Label      string
	Producers  int
	Consumers  int
	Size       int
	Duration   time.Duration
	Count      uint64 // total messages over all producers; 0: no limit
	Rate       float64
	Drain      time.Duration
	Timeout    time.Duration
	Progress   time.Duration
	JSON       bool
	CPUProfile string
	// textBodies makes bodies UTF-8 text (payload.go), for transports that need it; set by
	// the mode, not a flag.
	textBodies bool
}

var errUsage = errors.New("usage")

func badUsage(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
}

// register adds the shared flags to fs; defURL is the mode's default broker URL.
func (c *common) register(fs *flag.FlagSet, defURL string) {
	fs.StringVar(&c.URL, "url", defURL, "broker URL")
	fs.StringVar(&c.Label, "label", "", "name of this run in the report (default: the broker's host:port)")
	fs.IntVar(&c.Producers, "producers", 1, "publishing connections")
	fs.IntVar(&c.Consumers, "consumers", 1, "consuming connections (0 to only publish)")
	fs.IntVar(&c.Size, "size", 1024, fmt.Sprintf("message body size in bytes (at least %d, the accounting header)", headerLen))
	fs.DurationVar(&c.Duration, "duration", 0, "how long to publish (default 10s unless -count is given)")
	fs.Uint64Var(&c.Count, "count", 0, "total messages to publish over all producers (0 = until -duration)")
	fs.Float64Var(&c.Rate, "rate", 0, "total publish rate in msgs/s over all producers, latency measured from each message's scheduled send time (0 = as fast as possible)")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "after publishing, wait this long without progress for consumers to catch up")
	fs.DurationVar(&c.Timeout, "timeout", 0, "hard bound on the whole run (default: duration + drain + 30s, or 10m with -count only)")
	fs.DurationVar(&c.Progress, "progress", time.Second, "progress line interval on stderr (0 = quiet)")
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON instead of a table")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the load generator's own CPU profile here, to see whether it is the bottleneck")
}

// parseFlags parses args into fs, rejecting stray arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return badUsage("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// normalise checks the shared fields, fills the derived defaults and returns the parsed URL,
// whose scheme must be one of schemes.
func (c *common) normalise(schemes ...string) (*url.URL, error) {
	u, err := url.Parse(c.URL)
	if err != nil || !slices.Contains(schemes, u.Scheme) || u.Host == "" {
		return nil, badUsage("-url %q: want a %v URL such as %s://user:pass@host:port/", c.URL, schemes, schemes[0])
	}
	if c.Label == "" {
		c.Label = u.Host
	}
	switch {
	case c.Producers < 0 || c.Consumers < 0:
		return nil, badUsage("-producers and -consumers must be >= 0")
	case c.Producers == 0 && c.Consumers == 0:
		return nil, badUsage("nothing to do: -producers 0 and -consumers 0")
	case c.Rate < 0:
		return nil, badUsage("-rate must be >= 0")
	case c.Size > 128<<20:
		return nil, badUsage("-size above 128 MiB")
	case c.Duration < 0 || c.Drain < 0 || c.Timeout < 0 || c.Progress < 0:
		return nil, badUsage("durations must be >= 0")
	}
	if c.Size < headerLen {
		c.Size = headerLen
	}
	if c.Duration == 0 && c.Count == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Timeout == 0 {
		if c.Duration > 0 {
			c.Timeout = c.Duration + c.Drain + 30*time.Second
		} else {
			c.Timeout = 10 * time.Minute
		}
	}
	return u, nil
}

// quota is producer i's share of -count (0: unlimited).
func (c *common) quota(i int) uint64 {
	if c.Count == 0 {
		return 0
	}
	q := c.Count / uint64(c.Producers)
	if uint64(i) < c.Count%uint64(c.Producers) {
		q++
	}
	return q
}

// runMode is the shell every mode shares: bound the run by -timeout and SIGINT/SIGTERM,
// optionally profile the load generator itself, run bench, print the result.
func runMode(name string, c *common, parseErr error, stdout, stderr io.Writer, bench func(context.Context) (*Result, error)) int {
	if parseErr != nil {
		if errors.Is(parseErr, errUsage) {
			fmt.Fprintf(stderr, "parley-bench %s: %v\n", name, parseErr)
			return exitUsage
		}
		return exitFailed
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()

	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			fmt.Fprintf(stderr, "parley-bench %s: -cpuprofile: %v\n", name, err)
			return exitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "parley-bench %s: -cpuprofile: %v\n", name, err)
			return exitFailed
		}
		defer pprof.StopCPUProfile()
	}
	res, err := bench(ctx)
	if res != nil {
		if werr := writeResult(stdout, res, c.JSON); werr != nil {
			fmt.Fprintf(stderr, "parley-bench %s: writing result: %v\n", name, werr)
			return exitFailed
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "parley-bench %s: %v\n", name, err)
		return exitFailed
	}
	return exitOK
}

// redactedURL hides the password so reports can be pasted anywhere.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable url)"
	}
	return u.Redacted()
}
