package mqtt

import (
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/auth"
)

// IoT fleets reconnect with fresh random client ids: a session that has ended must leave no
// record behind in mochi (its client map and subscription index) nor in the server, or memory
// grows with every id ever seen. 20,000 distinct ids connect, subscribe and go, ended every way
// a session ends (DISCONNECT, a dropped connection, a clean session, a persistent one); then
// no client record and no session is left in the adapter. (A persistent session lives on in
// the core, as its queue, until it expires; mochi needs no record of it.)
func TestEndedSessionsLeaveNoRecord(t *testing.T) {
	n := 3000 // make test; the full 20,000 under make test-long
	if os.Getenv("PARLEY_TEST_LONG") != "" {
		n = 20000
	}
	log := zap.NewNop()
	b, err := broker.New(log, broker.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(DefaultConfig(), b, auth.DefaultStore(), log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { s.Close(); b.Close() })

	work := make(chan int)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := connectAndGo(ln.Addr().String(), i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		sessions := len(s.sessions) + len(s.byConn)
		s.mu.Unlock()
		clients := s.m.Clients.Len()
		if clients == 0 && sessions == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d sessions ended: %d mochi client records and %d sessions left", n, clients, sessions)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if subs := len(s.m.Topics.Subscribers("fleet/x").Subscriptions); subs != 0 {
		t.Fatalf("mochi's subscription index still holds %d subscriptions", subs)
	}
}

// connectAndGo is one device's visit: MQTT 3.1.1 or 5, clean or persistent (one in ten), a
// subscription, then DISCONNECT or a dropped connection.
func connectAndGo(addr string, i int) error {
	version := byte(4 + i%2)
	id := "dev-" + itoa(i)
	persistent := i%10 == 3
	polite := i%3 != 0
	visit := func(clean bool) error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		cp := connectPacket(version, id)
		cp.Connect.Clean = clean
		if version == 5 && !clean {
			cp.Properties.SessionExpiryInterval, cp.Properties.SessionExpiryIntervalFlag = 3600, true
		}
		sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "fleet/x", Qos: 1}}}
		if _, err := c.Write(encodeFor(version, cp, sub)); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 0x20 {
			return err
		}
		if polite {
			_, _ = c.Write(encodeFor(version, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}}))
		}
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
		return nil
	}
	return visit(!persistent)
}

func encodeFor(version byte, pks ...packets.Packet) []byte { return encode(nopTB{}, version, pks...) }

type nopTB struct{ testing.TB }

func (nopTB) Fatal(...any) {}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
