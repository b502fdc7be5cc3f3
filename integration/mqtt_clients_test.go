package integration

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestMQTTPythonPaho runs python/paho_mqtt_suite.py (QoS 1 and 2 round trips, MQTT 5 user
// properties, an MQTT 5 will's properties, retained messages, a bad password's CONNACK) with
// Debian's python3-paho-mqtt.
func TestMQTTPythonPaho(t *testing.T) {
	t.Parallel()
	if out, err := exec.Command(debianPython, "-c", "import paho.mqtt.client").CombinedOutput(); err != nil {
		t.Fatalf("python3-paho-mqtt is not installed (%v: %s); %v", err, strings.TrimSpace(string(out)), ErrNoBinary)
	}
	_, addr := StartParleyMQTT(t)
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("python", "paho_mqtt_suite.py"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, debianPython, script, host, port, Name(t, "py")).CombinedOutput()
	t.Logf("paho_mqtt_suite.py:\n%s", out)
	if err != nil {
		t.Fatalf("paho_mqtt_suite.py failed: %v", err)
	}
	if !strings.Contains(string(out), "paho-mqtt checks: 6 ok, 0 failed") {
		t.Fatal("paho_mqtt_suite.py did not report all 6 checks ok")
	}
}

// mosquitto_sub and mosquitto_pub (Debian mosquitto-clients), MQTT 3.1.1 and 5, QoS 0-2: the
// subscriber prints exactly what was published, once each.
func TestMQTTMosquittoClients(t *testing.T) {
	t.Parallel()
	for _, b := range []string{"mosquitto_pub", "mosquitto_sub"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s: %v; %v", b, err, ErrNoBinary)
		}
	}
	_, addr := StartParleyMQTT(t)
	host, port, _ := net.SplitHostPort(addr)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		// stdbuf: mosquitto_sub's stdout is a pipe here, which stdio would buffer to the end.
		sub := exec.CommandContext(ctx, "stdbuf", "-oL", "mosquitto_sub", "-h", host, "-p", port, "-V", v, "-u", "guest", "-P", "guest",
			"-i", "msub-"+v, "-t", "mosq/#", "-q", "2", "-v", "-d", "-C", "3", "-W", "30")
		stdout, err := sub.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		sub.Stderr = os.Stderr
		if err := sub.Start(); err != nil {
			t.Fatal(err)
		}
		// With -d mosquitto_sub reports its SUBACK ("Client ... received SUBACK"); publishing
		// starts after it. Message lines are "topic payload".
		lines := make(chan string, 64)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		for l := range lines {
			if strings.Contains(l, "received SUBACK") {
				break
			}
		}
		for q, msg := range []string{"zero", "one", "two"} {
			out, err := exec.CommandContext(ctx, "mosquitto_pub", "-h", host, "-p", port, "-V", v, "-u", "guest", "-P", "guest",
				"-i", "mpub-"+v, "-t", "mosq/"+v, "-q", string(rune('0'+q)), "-m", msg).CombinedOutput()
			if err != nil {
				t.Fatalf("mosquitto_pub %s q%d: %v %s", v, q, err, out)
			}
		}
		var got []string
		for l := range lines {
			if !strings.HasPrefix(l, "Client ") && !strings.HasPrefix(l, "Subscribed ") {
				got = append(got, l)
			}
		}
		if err := sub.Wait(); err != nil && len(got) < 3 {
			t.Fatalf("mosquitto_sub %s: %v (got %v)", v, err, got)
		}
		sort.Strings(got)
		want := []string{"mosq/" + v + " one", "mosq/" + v + " two", "mosq/" + v + " zero"}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("mosquitto_sub %s printed %q, want %q", v, got, want)
		}
		cancel()
	}
}
