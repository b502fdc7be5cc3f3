// Command capture records a real AMQP 0-9-1 conversation between github.com/rabbitmq/amqp091-go
// and a RabbitMQ broker, through a TCP proxy on 127.0.0.1, and writes what it saw as test data
// for package wire:
//
//   - testdata/capture/client.bin, server.bin: the raw byte streams in each direction (the
//     client's starts with the protocol header), the golden input of the wire tests;
//   - testdata/capture/transcript.txt: every frame decoded, for people;
//   - testdata/fuzz/Fuzz*/: seed corpora (go test fuzz v1) made of the captured frames, method
//     payloads, content headers and field tables.
//
// Run it from protocol/amqp091/wire against a RabbitMQ that is not in production use:
//
//	go run ./internal/capture -broker 127.0.0.1:5673
//
// The client script declares exchanges and queues with argument tables, binds, publishes with
// properties and headers of every field type, consumes, acks, nacks, rejects, gets, uses
// publisher confirms and transactions, provokes a channel error and a basic.return, and closes.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parleymq/parley/protocol/amqp091/wire"
)

func main() {
	broker := flag.String("broker", "127.0.0.1:5673", "address of the RabbitMQ to record")
	out := flag.String("out", ".", "the wire package directory (testdata is written below it)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := run(ctx, *broker, *out); err != nil {
		fmt.Fprintln(os.Stderr, "capture:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, broker, out string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()

	var clientBuf, serverBuf bytes.Buffer
	proxyDone := make(chan error, 1)
	go func() { proxyDone <- proxy(ln, broker, &clientBuf, &serverBuf) }()

	if err := script(ctx, "amqp://guest:guest@"+ln.Addr().String()+"/"); err != nil {
		return fmt.Errorf("client script: %w", err)
	}
	select {
	case err := <-proxyDone:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return fmt.Errorf("waiting for the proxy: %w", ctx.Err())
	}
	return write(out, clientBuf.Bytes(), serverBuf.Bytes())
}

// proxy relays one connection and records each direction.
func proxy(ln net.Listener, broker string, client, server *bytes.Buffer) error {
	c, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer c.Close()
	s, err := net.Dial("tcp", broker)
	if err != nil {
		return fmt.Errorf("dial broker: %w", err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	relay := func(dst, src net.Conn, rec *bytes.Buffer) {
		defer wg.Done()
		_, _ = io.Copy(io.MultiWriter(dst, rec), src)
		// Half-close so the other side sees EOF after the last frame.
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	go relay(s, c, client)
	go relay(c, s, server)
	wg.Wait()
	return nil
}

func script(ctx context.Context, url string) error {
	conn, err := amqp.DialConfig(url, amqp.Config{
		FrameSize: 4096, // small, so that a 10 kB body is split into several body frames
		Heartbeat: 0,
		Properties: amqp.Table{
			"connection_name": "parley-capture",
			"product":         "parley wire capture",
		},
	})
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("channel: %w", err)
	}

	// A queue left over by an interrupted run would make queue.declare fail on its arguments.
	if _, err := ch.QueueDelete("parley.capture.q", false, false, false); err != nil {
		return fmt.Errorf("delete a leftover queue: %w", err)
	}

	steps := []struct {
		name string
		do   func() error
	}{
		{"exchange.declare topic", func() error {
			return ch.ExchangeDeclare("parley.capture.topic", "topic", false, true, false, false,
				amqp.Table{"alternate-exchange": "parley.capture.ae"})
		}},
		{"exchange.declare fanout", func() error {
			return ch.ExchangeDeclare("parley.capture.ae", "fanout", false, true, false, false, nil)
		}},
		{"exchange.declare headers", func() error {
			return ch.ExchangeDeclare("parley.capture.headers", "headers", false, true, false, false, nil)
		}},
		{"exchange.bind", func() error {
			return ch.ExchangeBind("parley.capture.headers", "a.#", "parley.capture.topic", false,
				amqp.Table{"x-match": "any", "k": "v"})
		}},
		{"queue.declare", func() error {
			_, err := ch.QueueDeclare("parley.capture.q", false, false, false, false, amqp.Table{
				"x-message-ttl":          int32(60000),
				"x-max-length":           1000, // a Go int
				"x-dead-letter-exchange": "parley.capture.ae",
				"x-max-priority":         int64(5),
			})
			return err
		}},
		{"queue.declare server-named", func() error {
			q, err := ch.QueueDeclare("", false, true, true, false, nil)
			if err != nil {
				return err
			}
			return ch.QueueBind(q.Name, "", "parley.capture.ae", false, nil)
		}},
		{"queue.bind", func() error {
			return ch.QueueBind("parley.capture.q", "a.*", "parley.capture.topic", false, amqp.Table{"x-arg": true})
		}},
		{"queue.bind headers", func() error {
			return ch.QueueBind("parley.capture.q", "", "parley.capture.headers", false,
				amqp.Table{"x-match": "all", "n": int32(7)})
		}},
		{"basic.qos", func() error { return ch.Qos(10, 0, false) }},
		{"confirm.select", func() error { return ch.Confirm(false) }},
		{"publish with every property and header type", func() error {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "parley.capture.topic", "a.b", false, false, amqp.Publishing{
				ContentType:     "application/json",
				ContentEncoding: "identity",
				DeliveryMode:    amqp.Persistent,
				Priority:        3,
				CorrelationId:   "corr-1",
				ReplyTo:         "parley.capture.replies",
				Expiration:      "60000",
				MessageId:       "msg-1",
				Timestamp:       time.Unix(1700000000, 0),
				Type:            "capture",
				UserId:          "guest",
				AppId:           "parley-capture",
				Headers: amqp.Table{
					"bool":    true,
					"int8":    int8(-8),
					"uint8":   uint8(8),
					"int16":   int16(-16),
					"uint16":  uint16(16),
					"int32":   int32(-32),
					"uint32":  uint32(32),
					"int64":   int64(-64),
					"int":     42,
					"float32": float32(1.5),
					"float64": 2.25,
					"decimal": amqp.Decimal{Scale: 2, Value: 12345},
					"string":  "hello",
					"bytes":   []byte{0, 1, 2, 0xff},
					"array":   []any{int32(1), "two", true},
					"time":    time.Unix(1700000001, 0),
					"table":   amqp.Table{"nested": "yes"},
					"void":    nil,
				},
				Body: []byte(`{"hello":"world"}`),
			})
			if err != nil {
				return err
			}
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				return fmt.Errorf("publish not confirmed (%v): %w", ok, err)
			}
			return nil
		}},
		{"publish a 10 kB body and an empty body", func() error {
			big := bytes.Repeat([]byte("0123456789"), 1000)
			for _, body := range [][]byte{big, {}} {
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "parley.capture.topic", "a.c", false, false,
					amqp.Publishing{Body: body})
				if err != nil {
					return err
				}
				if _, err := dc.WaitContext(ctx); err != nil {
					return err
				}
			}
			return nil
		}},
		{"publish mandatory unroutable (basic.return)", func() error {
			returns := ch.NotifyReturn(make(chan amqp.Return, 1))
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", "parley.capture.nowhere", true, false,
				amqp.Publishing{ContentType: "text/plain", Body: []byte("lost")})
			if err != nil {
				return err
			}
			if _, err := dc.WaitContext(ctx); err != nil {
				return err
			}
			select {
			case <-returns:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
		{"consume, ack, nack, reject, redeliver", func() error {
			deliveries, err := ch.Consume("parley.capture.q", "parley-ctag", false, false, false, false,
				amqp.Table{"x-priority": int32(1)})
			if err != nil {
				return err
			}
			next := func() (amqp.Delivery, error) {
				select {
				case d := <-deliveries:
					return d, nil
				case <-ctx.Done():
					return amqp.Delivery{}, ctx.Err()
				}
			}
			d1, err := next()
			if err != nil {
				return err
			}
			if err := d1.Ack(false); err != nil {
				return err
			}
			d2, err := next()
			if err != nil {
				return err
			}
			if err := d2.Nack(false, true); err != nil { // requeue: comes back redelivered
				return err
			}
			d2r, err := next()
			if err != nil {
				return err
			}
			if err := d2r.Reject(false); err != nil {
				return err
			}
			d3, err := next()
			if err != nil {
				return err
			}
			if err := d3.Nack(true, false); err != nil {
				return err
			}
			return ch.Cancel("parley-ctag", false)
		}},
		{"basic.get and get-empty", func() error {
			if err := ch.PublishWithContext(ctx, "", "parley.capture.q", false, false,
				amqp.Publishing{Body: []byte("get me"), Headers: amqp.Table{"x": "y"}}); err != nil {
				return err
			}
			for i := 0; ; i++ {
				d, ok, err := ch.Get("parley.capture.q", false)
				if err != nil {
					return err
				}
				if ok {
					if err := d.Ack(false); err != nil {
						return err
					}
					break
				}
				if i > 100 {
					return errors.New("basic.get never returned the message")
				}
				time.Sleep(10 * time.Millisecond)
			}
			_, _, err := ch.Get("parley.capture.q", true)
			return err
		}},
		//lint:ignore SA1019 the capture records basic.recover frames on purpose: old clients still send them
		{"basic.recover", func() error { return ch.Recover(true) }},
		{"tx", func() error {
			tx, err := conn.Channel()
			if err != nil {
				return err
			}
			if err := tx.Tx(); err != nil {
				return err
			}
			if err := tx.PublishWithContext(ctx, "", "parley.capture.q", false, false, amqp.Publishing{Body: []byte("tx")}); err != nil {
				return err
			}
			if err := tx.TxCommit(); err != nil {
				return err
			}
			if err := tx.PublishWithContext(ctx, "", "parley.capture.q", false, false, amqp.Publishing{Body: []byte("rolled back")}); err != nil {
				return err
			}
			if err := tx.TxRollback(); err != nil {
				return err
			}
			return tx.Close()
		}},
		{"channel error (404 on passive declare)", func() error {
			bad, err := conn.Channel()
			if err != nil {
				return err
			}
			_, err = bad.QueueDeclarePassive("parley.capture.missing", false, false, false, false, nil)
			var aerr *amqp.Error
			if !errors.As(err, &aerr) || aerr.Code != amqp.NotFound {
				return fmt.Errorf("want a 404 channel error, got %v", err)
			}
			return nil
		}},
		{"purge, unbind, delete", func() error {
			if _, err := ch.QueuePurge("parley.capture.q", false); err != nil {
				return err
			}
			if err := ch.QueueUnbind("parley.capture.q", "a.*", "parley.capture.topic", amqp.Table{"x-arg": true}); err != nil {
				return err
			}
			if err := ch.ExchangeUnbind("parley.capture.headers", "a.#", "parley.capture.topic", false,
				amqp.Table{"x-match": "any", "k": "v"}); err != nil {
				return err
			}
			if _, err := ch.QueueDelete("parley.capture.q", false, false, false); err != nil {
				return err
			}
			for _, x := range []string{"parley.capture.headers", "parley.capture.topic", "parley.capture.ae"} {
				if err := ch.ExchangeDelete(x, false, false); err != nil {
					return err
				}
			}
			return ch.Close()
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return conn.Close()
}

// write parses both streams, writes the raw streams, a transcript and the seed corpora.
func write(dir string, client, server []byte) error {
	capDir := filepath.Join(dir, "testdata", "capture")
	if err := os.MkdirAll(capDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(capDir, "client.bin"), client, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(capDir, "server.bin"), server, 0o644); err != nil {
		return err
	}
	if len(client) < 8 || !bytes.Equal(client[:8], wire.ProtocolHeader) {
		return errors.New("client stream does not start with the protocol header")
	}
	corpus := map[string]map[string][]byte{
		"FuzzReadFrame": {}, "FuzzDecodeMethod": {}, "FuzzContentHeader": {}, "FuzzReadTable": {},
	}
	var transcript bytes.Buffer
	for _, side := range []struct {
		name   string
		stream []byte
	}{{"C", client[8:]}, {"S", server}} {
		rest := side.stream
		for len(rest) > 0 {
			r := wire.NewReader(bytes.NewReader(rest), 0)
			f, err := r.ReadFrame()
			if err != nil {
				return fmt.Errorf("%s stream: %w", side.name, err)
			}
			n := len(f.Payload) + 8
			raw := rest[:n]
			rest = rest[n:]
			if len(raw) <= 4096 {
				corpus["FuzzReadFrame"][key(raw)] = raw
			}
			switch f.Type {
			case wire.FrameMethod:
				corpus["FuzzDecodeMethod"][key(f.Payload)] = f.Payload
				m, err := wire.DecodeMethod(f.Payload)
				if err != nil {
					return fmt.Errorf("%s: %w", side.name, err)
				}
				fmt.Fprintf(&transcript, "%s ch%d %s %+v\n", side.name, f.Channel, m.Name(), m)
				for _, t := range tables(m) {
					b, err := wire.AppendTable(nil, t)
					if err != nil {
						return err
					}
					corpus["FuzzReadTable"][key(b)] = b
				}
			case wire.FrameHeader:
				corpus["FuzzContentHeader"][key(f.Payload)] = f.Payload
				var h wire.ContentHeader
				if err := wire.DecodeContentHeader(f.Payload, &h); err != nil {
					return fmt.Errorf("%s: %w", side.name, err)
				}
				fmt.Fprintf(&transcript, "%s ch%d header %+v\n", side.name, f.Channel, h)
				if h.Properties.Headers != nil {
					b, err := wire.AppendTable(nil, h.Properties.Headers)
					if err != nil {
						return err
					}
					corpus["FuzzReadTable"][key(b)] = b
				}
			case wire.FrameBody:
				fmt.Fprintf(&transcript, "%s ch%d body %d octets\n", side.name, f.Channel, len(f.Payload))
			case wire.FrameHeartbeat:
				fmt.Fprintf(&transcript, "%s heartbeat\n", side.name)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(capDir, "transcript.txt"), transcript.Bytes(), 0o644); err != nil {
		return err
	}
	for name, files := range corpus {
		d := filepath.Join(dir, "testdata", "fuzz", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		keys := make([]string, 0, len(files))
		for k := range files {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			// go test fuzz v1: one Go-syntax value per line.
			text := "go test fuzz v1\n[]byte(" + strconv.Quote(string(files[k])) + ")\n"
			if err := os.WriteFile(filepath.Join(d, "capture-"+k), []byte(text), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

func key(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// tables returns the field tables a method carries.
func tables(m wire.Method) []wire.Table {
	var ts []wire.Table
	switch m := m.(type) {
	case *wire.ConnectionStart:
		ts = append(ts, m.ServerProperties)
	case *wire.ConnectionStartOk:
		ts = append(ts, m.ClientProperties)
	case *wire.ExchangeDeclare:
		ts = append(ts, m.Arguments)
	case *wire.ExchangeBind:
		ts = append(ts, m.Arguments)
	case *wire.ExchangeUnbind:
		ts = append(ts, m.Arguments)
	case *wire.QueueDeclare:
		ts = append(ts, m.Arguments)
	case *wire.QueueBind:
		ts = append(ts, m.Arguments)
	case *wire.QueueUnbind:
		ts = append(ts, m.Arguments)
	case *wire.BasicConsume:
		ts = append(ts, m.Arguments)
	}
	out := ts[:0]
	for _, t := range ts {
		if len(t) > 0 {
			out = append(out, t)
		}
	}
	return out
}
