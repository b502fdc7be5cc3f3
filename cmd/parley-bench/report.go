package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Result is one run's outcome. The JSON field names are the contract with scripts/bench.sh.
type Result struct {
	Mode     string `json:"mode"`
	Label    string `json:"label"`
	URL      string `json:"url"`
	Shape    string `json:"shape"`
	TimedOut bool   `json:"timed_out"` // the run hit -timeout or a signal; figures are partial
	Confirms bool   `json:"confirms"`  // accepted means confirmed by the broker (AMQP confirms, MQTT PUBACK/PUBCOMP, STOMP RECEIPT)

	Published   uint64 `json:"published"`   // publish calls that succeeded
	Confirmed   uint64 `json:"confirmed"`   // confirmed by the broker (confirms only)
	Nacked      uint64 `json:"nacked"`      // nacked by the broker (confirms only)
	Unconfirmed uint64 `json:"unconfirmed"` // neither acked nor nacked by the end (confirms only)
	Consumed    uint64 `json:"consumed"`    // deliveries, duplicates and redeliveries included
	Foreign     uint64 `json:"foreign"`     // deliveries that were not ours

	PublishSeconds float64 `json:"publish_seconds"`  // first publish to last publish (or last confirm)
	ConsumeSeconds float64 `json:"consume_seconds"`  // first publish to last delivery
	InRate         float64 `json:"in_msgs_per_sec"`  // accepted messages (confirmed ones with confirms) per second
	OutRate        float64 `json:"out_msgs_per_sec"` // deliveries per second

	Latency    LatencySummary `json:"latency_us"`
	Accounting Accounting     `json:"accounting"`
	Idle       *IdleFigures   `json:"idle,omitempty"` // idle mode only: memory and connect rate
	Errors     []string       `json:"errors,omitempty"`
}

// LatencySummary is end-to-end latency, publish call to delivery, in microseconds.
type LatencySummary struct {
	Count uint64  `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func summarise(h *Histogram) LatencySummary {
	return LatencySummary{
		Count: h.Count(), Min: us(h.Min()), Mean: us(h.Mean()),
		P50: us(h.Quantile(0.50)), P99: us(h.Quantile(0.99)), P999: us(h.Quantile(0.999)), Max: us(h.Max()),
	}
}

func buildResult(pl plan, start, publishEnd int64, producers []*producer, consumers []*consumer,
	trackers []*Tracker, owed []map[uint32]*seqSet, timedOut bool) *Result {
	cfg := pl.cfg
	r := &Result{Mode: pl.mode, Label: cfg.Label, URL: redactedURL(cfg.URL), Shape: pl.shape, TimedOut: timedOut, Confirms: pl.confirms}
	lastIn, lastOut := start, start
	for _, p := range producers {
		r.Published += p.published.Load()
		r.Confirmed += p.acked.Load()
		r.Nacked += p.nacked.Load()
		lastIn = max(lastIn, p.lastEvent.Load())
		if p.err != nil {
			r.Errors = append(r.Errors, p.err.Error())
		}
	}
	if pl.confirms {
		r.Unconfirmed = r.Published - r.Confirmed - r.Nacked
	}
	var h Histogram
	for _, c := range consumers {
		r.Consumed += c.consumed.Load()
		r.Foreign += c.foreign.Load()
		lastOut = max(lastOut, c.lastRecv.Load())
		h.Merge(&c.hist)
		if c.err != nil {
			r.Errors = append(r.Errors, c.err.Error())
		}
	}
	r.Latency = summarise(&h)
	if len(consumers) > 0 {
		for g, t := range trackers {
			r.Accounting = r.Accounting.Add(t.Account(owed[g]))
		}
	}
	accepted := r.Published
	if pl.confirms {
		accepted = r.Confirmed
	}
	if lastIn == start {
		lastIn = publishEnd
	}
	r.PublishSeconds = time.Duration(lastIn - start).Seconds()
	r.ConsumeSeconds = time.Duration(lastOut - start).Seconds()
	if r.PublishSeconds > 0 {
		r.InRate = float64(accepted) / r.PublishSeconds
	}
	if r.ConsumeSeconds > 0 {
		r.OutRate = float64(r.Consumed) / r.ConsumeSeconds
	}
	return r
}

func writeResult(w io.Writer, r *Result, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if r.Idle != nil {
		return writeIdle(w, tw, r)
	}
	fmt.Fprintln(tw, "broker\tin msg/s\tout msg/s\tp50 µs\tp99 µs\tp99.9 µs\tmax µs\tpublished\tconfirmed\tconsumed\tlost\tdup\tredeliv\t")
	confirmed := "-"
	if r.Confirms {
		confirmed = fmt.Sprint(r.Confirmed)
	}
	fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%s\t%d\t%d\t%d\t%d\t\n",
		r.Label, r.InRate, r.OutRate, r.Latency.P50, r.Latency.P99, r.Latency.P999, r.Latency.Max,
		r.Published, confirmed, r.Consumed, r.Accounting.Lost, r.Accounting.Duplicates, r.Accounting.Redelivered)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	fmt.Fprintf(w, "shape: %s\n", r.Shape)
	var notes []string
	if r.TimedOut {
		notes = append(notes, "run cut short by -timeout or a signal: figures are partial")
	}
	if r.Nacked > 0 || r.Unconfirmed > 0 {
		notes = append(notes, fmt.Sprintf("%d nacked, %d unconfirmed at the end (not counted as lost)", r.Nacked, r.Unconfirmed))
	}
	if r.Accounting.Unexpected > 0 {
		notes = append(notes, fmt.Sprintf("%d delivered that were not confirmed", r.Accounting.Unexpected))
	}
	if r.Foreign > 0 {
		notes = append(notes, fmt.Sprintf("%d foreign messages ignored", r.Foreign))
	}
	for _, e := range r.Errors {
		notes = append(notes, "error: "+e)
	}
	for _, n := range notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}

func writeIdle(w io.Writer, tw *tabwriter.Writer, r *Result) error {
	f := r.Idle
	fmt.Fprintln(tw, "broker\tconnected\tfailed\tconnects/s\tRSS before KiB\tRSS after KiB\tbytes/conn\tstill open\t")
	perConn := "-"
	if f.PID > 0 {
		perConn = fmt.Sprintf("%.0f", f.BytesPerConn)
	}
	fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%d\t%d\t%s\t%d\t\n", r.Label, f.Connected, f.Failed, f.ConnectRate,
		f.RSSBeforeKB, f.RSSAfterKB, perConn, f.StillOpenAtEnd)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	fmt.Fprintf(w, "shape: %s\n", r.Shape)
	if f.FirstError != "" {
		fmt.Fprintf(w, "note: first connection error: %s\n", f.FirstError)
	}
	if r.TimedOut {
		fmt.Fprintln(w, "note: run cut short by -timeout or a signal: figures are partial")
	}
	return nil
}

// reportProgress prints one line per interval until done: rates over the last interval and
// totals, so a stalled broker is visible while the run is still going.
func reportProgress(w io.Writer, label string, interval time.Duration, clk clock, start int64, producers []*producer, consumers []*consumer, done <-chan struct{}) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var prevIn, prevOut uint64
	prevT := start
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		var in, out uint64
		for _, p := range producers {
			in += p.published.Load()
		}
		for _, c := range consumers {
			out += c.consumed.Load()
		}
		now := clk.now()
		dt := time.Duration(now - prevT).Seconds()
		fmt.Fprintf(w, "%s t=%5.1fs  in %8.0f/s  out %8.0f/s  published %d  consumed %d\n",
			label, time.Duration(now-start).Seconds(), float64(in-prevIn)/dt, float64(out-prevOut)/dt, in, out)
		prevIn, prevOut, prevT = in, out, now
	}
}
