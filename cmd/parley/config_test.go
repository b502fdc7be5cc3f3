package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"testing"
	"time"

	"go.uber.org/zap"
)

func noEnv(string) (string, bool) { return "", false }

// The documented file must say exactly what the defaults are.
func TestConfigFileMatchesDefaults(t *testing.T) {
	cfg, err := LoadConfig([]string{"--config", "../../configs/parley.yaml"}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if def := DefaultConfig(); !reflect.DeepEqual(cfg, def) {
		t.Fatalf("configs/parley.yaml differs from the defaults:\nfile:    %+v\ndefault: %+v", cfg, def)
	}
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(file, []byte("amqp: 127.0.0.1:1000\nmqtt: 127.0.0.1:1001\nstomp: 127.0.0.1:1002\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PARLEY_MQTT": "127.0.0.1:2001", "PARLEY_STOMP": "127.0.0.1:2002"}
	cfg, err := LoadConfig([]string{"--config", file, "--stomp", "off"}, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AMQP != "127.0.0.1:1000" || cfg.MQTT != "127.0.0.1:2001" || cfg.STOMP != "off" {
		t.Fatalf("precedence wrong: amqp=%s mqtt=%s stomp=%s", cfg.AMQP, cfg.MQTT, cfg.STOMP)
	}
	if cfg.HTTP != DefaultConfig().HTTP {
		t.Fatalf("unset option lost its default: %s", cfg.HTTP)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--amqp", "nonsense"},
		{"--log-level", "loud"},
		{"--config", "/does/not/exist.yaml"},
		{"stray"},
	} {
		if _, err := LoadConfig(args, noEnv); !errors.Is(err, errUsage) {
			t.Errorf("%v: got %v, want a configuration error", args, err)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(file, []byte("no_such_option: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig([]string{"--config", file}, noEnv); !errors.Is(err, errUsage) {
		t.Errorf("unknown option accepted: %v", err)
	}
}

func TestPprofAddr(t *testing.T) {
	if cfg, err := LoadConfig(nil, noEnv); err != nil || cfg.Debug.PprofAddr != "off" {
		t.Fatalf("default pprof_addr %q, %v: want off", cfg.Debug.PprofAddr, err)
	}
	for _, addr := range []string{"127.0.0.1:6060", "[::1]:0", "localhost:6060"} {
		if cfg, err := LoadConfig([]string{"--pprof", addr}, noEnv); err != nil || cfg.Debug.PprofAddr != addr {
			t.Errorf("--pprof %s: %q, %v", addr, cfg.Debug.PprofAddr, err)
		}
	}
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "10.1.2.3:6060", "127.0.0.1", "127.0.0.1:99999"} {
		if _, err := LoadConfig([]string{"--pprof", addr}, noEnv); !errors.Is(err, errUsage) {
			t.Errorf("--pprof %s: %v, want a configuration error", addr, err)
		}
	}
}

// The endpoint serves real profiles over a real socket.
func TestPprofServes(t *testing.T) {
	ln, err := startPprof("127.0.0.1:0", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer runtime.SetBlockProfileRate(0)
	defer runtime.SetMutexProfileFraction(0)
	client := &http.Client{Timeout: 10 * time.Second}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/mutex?debug=1", "/debug/pprof/block?debug=1"} {
		resp, err := client.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("%s: status %d, %d bytes", path, resp.StatusCode, len(body))
		}
	}
}
