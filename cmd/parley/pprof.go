package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"

	"go.uber.org/zap"
)

// Sampling rates while profiling is on: one blocking event per 10 µs spent blocked on
// average, and one in 10 mutex contention events. Fine enough to find where publishers and
// queues wait, cheap enough to leave the throughput being profiled roughly intact.
const (
	blockProfileRateNanos = 10_000
	mutexProfileFraction  = 10
)

// startPprof serves net/http/pprof on addr (validated loopback) on its own mux, so nothing
// else registered on http.DefaultServeMux is exposed, and turns on block and mutex sampling,
// which are off otherwise because they cost throughput.
func startPprof(addr string, log *zap.Logger) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen pprof on %s: %w", addr, err)
	}
	runtime.SetBlockProfileRate(blockProfileRateNanos)
	runtime.SetMutexProfileFraction(mutexProfileFraction)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			log.Warn("pprof server stopped", zap.Error(err))
		}
	}()
	log.Info("listening", zap.String("listener", "pprof"), zap.String("addr", ln.Addr().String()))
	return ln, nil
}
