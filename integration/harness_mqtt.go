package integration

import (
	"net"
	"os"
	"strconv"
	"testing"
)

// ExternalMQTTEnv names the environment variable with host:port of an external broker's MQTT
// listener, used with PARLEY_TEST_AMQP_URL (for instance RabbitMQ with its MQTT plugin).
const ExternalMQTTEnv = "PARLEY_TEST_MQTT_ADDR"

// StartParleyMQTT is StartParley with the MQTT listener on a free port of 127.0.0.1 as well;
// it returns the server and the MQTT listener's host:port. Against an external broker the test
// is skipped unless PARLEY_TEST_MQTT_ADDR names its MQTT listener.
func StartParleyMQTT(t testing.TB, extraArgs ...string) (*Server, string) {
	t.Helper()
	if ExternalURL() != "" {
		addr := os.Getenv(ExternalMQTTEnv)
		if addr == "" {
			t.Skipf("%s is set but %s is not: no MQTT listener to test", ExternalURLEnv, ExternalMQTTEnv)
		}
		return StartParley(t), addr
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("picking a port: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// parley opens the MQTT listener before the AMQP one, so StartParley's wait for AMQP covers
	// it. The port is part of the arguments, so Restart and Kill keep it.
	s := StartParley(t, append([]string{"--mqtt", addr}, extraArgs...)...)
	return s, addr
}
