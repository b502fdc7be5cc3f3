package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rawMQTT is a minimal MQTT 3.1.1 client over one socket, cheap enough to hold thousands.
type rawMQTT struct {
	c  net.Conn
	br *bufio.Reader
}

func mqttString(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func mqttPacket(first byte, body []byte) []byte {
	out := []byte{first}
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

func dialRawMQTT(addr, id string) (*rawMQTT, error) {
	c, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		return nil, err
	}
	r := &rawMQTT{c: c, br: bufio.NewReaderSize(c, 256)}
	body := append(mqttString("MQTT"), 4, 0xC2, 0, 0) // level 4, user+password+clean, keepalive 0
	body = append(body, mqttString(id)...)
	body = append(body, mqttString("guest")...)
	body = append(body, mqttString("guest")...)
	_ = c.SetDeadline(time.Now().Add(mqttTimeout))
	if _, err := c.Write(mqttPacket(0x10, body)); err != nil {
		c.Close()
		return nil, err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(r.br, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("CONNACK % x: %v", ack, err)
	}
	_ = c.SetDeadline(time.Time{})
	return r, nil
}

// readPacket reads one packet: its first byte and body.
func (r *rawMQTT) readPacket() (byte, []byte, error) {
	first, err := r.br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7F) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r.br, body)
	return first, body, err
}

// TestMQTTManyConnections holds 10,000 concurrent MQTT connections and checks the broker still
// delivers to subscribers among them (one in a hundred) and answers every one of them. It takes
// a few seconds, so make test runs it at full size (PARLEY_TEST_MQTT_CONNS overrides the count).
func TestMQTTManyConnections(t *testing.T) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("PARLEY_TEST_MQTT_CONNS")); err == nil && v > 0 {
		n = v
	}
	// Two descriptors per connection on this machine (ours and parley's, which inherits the
	// limit from this process).
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	need := uint64(n + 1024)
	if lim.Cur < need {
		lim.Cur = need
		if lim.Max < need {
			lim.Max = need // works as root; otherwise the error says what is missing
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("raising RLIMIT_NOFILE to %d: %v", need, err)
		}
	}
	_, addr := StartParleyMQTT(t)
	start := time.Now()
	conns := make([]*rawMQTT, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r, err := dialRawMQTT(addr, fmt.Sprintf("many-%d", i))
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					continue
				}
				conns[i] = r
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Cleanup(func() {
		for _, r := range conns {
			if r != nil {
				r.c.Close()
			}
		}
	})
	select {
	case err := <-errs:
		t.Fatalf("%v (and %d more)", err, len(errs))
	default:
	}
	t.Logf("%d connections open after %v", n, time.Since(start).Round(time.Millisecond))
	// Every 100th connection subscribes; one publish reaches each of them.
	var subs []*rawMQTT
	for i := 0; i < n; i += 100 {
		r := conns[i]
		body := append([]byte{0, 1}, mqttString("many/all")...)
		body = append(body, 1)
		_ = r.c.SetDeadline(time.Now().Add(mqttTimeout))
		if _, err := r.c.Write(mqttPacket(0x82, body)); err != nil {
			t.Fatal(err)
		}
		if typ, _, err := r.readPacket(); err != nil || typ != 0x90 {
			t.Fatalf("SUBACK on connection %d: %x %v", i, typ, err)
		}
		subs = append(subs, r)
	}
	pub := mqtt3(t, addr, "many-pub", true)
	wait3(t, "publish", pub.Publish("many/all", 1, false, "to all"))
	for i, r := range subs {
		typ, body, err := r.readPacket()
		if err != nil || typ&0xF0 != 0x30 {
			t.Fatalf("subscriber %d: packet %x %v", i, typ, err)
		}
		tl := int(body[0])<<8 | int(body[1])
		payload := body[2+tl:]
		if typ&0x06 != 0 {
			payload = payload[2:] // packet identifier
			id := body[2+tl : 2+tl+2]
			if _, err := r.c.Write(mqttPacket(0x40, id)); err != nil {
				t.Fatal(err)
			}
		}
		if string(payload) != "to all" {
			t.Fatalf("subscriber %d got %q", i, payload)
		}
	}
	t.Logf("delivered to %d subscribers after %v", len(subs), time.Since(start).Round(time.Millisecond))
	// Every connection is still served: PINGREQ gets PINGRESP.
	for i, r := range conns {
		_ = r.c.SetDeadline(time.Now().Add(mqttTimeout))
		if _, err := r.c.Write([]byte{0xC0, 0}); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	for i, r := range conns {
		if typ, _, err := r.readPacket(); err != nil || typ != 0xD0 {
			t.Fatalf("connection %d: PINGRESP %x %v", i, typ, err)
		}
	}
	t.Logf("every connection answered PINGREQ after %v", time.Since(start).Round(time.Millisecond))
}
