// Command probe sends malformed frames to a RabbitMQ broker, one connection per case, and
// prints how the broker answers (the close method's reply code and text), so that Parley's AMQP
// adapter can answer the same way. It uses only package wire on a raw TCP connection.
//
//	go run ./internal/probe -broker 127.0.0.1:5673
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/parleymq/parley/protocol/amqp091/wire"
)

type probeCase struct {
	name string
	// frames are sent on an open connection with channel 1 open.
	frames func() []byte
}

func methodFrame(channel uint16, payload []byte) []byte {
	f := []byte{wire.FrameMethod, byte(channel >> 8), byte(channel)}
	n := len(payload)
	f = append(f, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	f = append(f, payload...)
	return append(f, wire.FrameEnd)
}

var cases = []probeCase{
	{"basic.ack with a trailing octet", func() []byte {
		return methodFrame(1, append((&wire.BasicAck{DeliveryTag: 1}).Append(nil), 0))
	}},
	{"truncated basic.publish", func() []byte {
		p := (&wire.BasicPublish{Exchange: "amq.direct", RoutingKey: "k"}).Append(nil)
		return methodFrame(1, p[:len(p)-3])
	}},
	{"unknown method 60.99", func() []byte { return methodFrame(1, []byte{0, 60, 0, 99}) }},
	{"unknown class 99.10", func() []byte { return methodFrame(1, []byte{0, 99, 0, 10}) }},
	{"queue.declare with a bad table type code", func() []byte {
		p := (&wire.QueueDeclare{Queue: "probe"}).Append(nil)
		p = append(p[:len(p)-4], 0, 0, 0, 3, 1, 'k', '?')
		return methodFrame(1, p)
	}},
	{"frame larger than frame-max", func() []byte {
		body := make([]byte, 200000)
		return methodFrame(1, append((&wire.BasicAck{}).Append(nil), body...))
	}},
	{"bad frame-end", func() []byte {
		f := methodFrame(1, (&wire.BasicAck{}).Append(nil))
		f[len(f)-1] = 0
		return f
	}},
	{"unknown frame type 5", func() []byte { return []byte{5, 0, 1, 0, 0, 0, 0, wire.FrameEnd} }},
	{"header frame without a method", func() []byte {
		return wire.AppendHeaderFrame(nil, 1, 60, 0, &wire.Properties{})
	}},
}

func main() {
	broker := flag.String("broker", "127.0.0.1:5673", "RabbitMQ address")
	flag.Parse()
	for _, c := range cases {
		res, err := probe(*broker, c)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", c.name, err)
			os.Exit(1)
		}
		fmt.Printf("%-45s %s\n", c.name, res)
	}
}

func probe(broker string, c probeCase) (string, error) {
	conn, err := net.DialTimeout("tcp", broker, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := wire.NewReader(conn, 0)
	send := func(m wire.Method, ch uint16) error {
		_, err := conn.Write(wire.AppendMethodFrame(nil, ch, m))
		return err
	}
	next := func() (wire.Method, uint16, error) {
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return nil, 0, err
			}
			if f.Type != wire.FrameMethod {
				continue
			}
			m, err := wire.DecodeMethod(f.Payload)
			return m, f.Channel, err
		}
	}
	if _, err := conn.Write(wire.ProtocolHeader); err != nil {
		return "", err
	}
	steps := []struct {
		want string
		send wire.Method
		ch   uint16
	}{
		{"connection.start", &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: []byte("\x00guest\x00guest"), Locale: "en_US"}, 0},
		{"connection.tune", &wire.ConnectionTuneOk{ChannelMax: 2047, FrameMax: 131072}, 0},
		{"", &wire.ConnectionOpen{VirtualHost: "/"}, 0},
		{"connection.open-ok", &wire.ChannelOpen{}, 1},
		{"channel.open-ok", nil, 0},
	}
	for _, s := range steps {
		if s.want != "" {
			m, _, err := next()
			if err != nil {
				return "", fmt.Errorf("waiting for %s: %w", s.want, err)
			}
			if m.Name() != s.want {
				return "", fmt.Errorf("got %s, want %s", m.Name(), s.want)
			}
		}
		if s.send != nil {
			if err := send(s.send, s.ch); err != nil {
				return "", err
			}
		}
	}
	if _, err := conn.Write(c.frames()); err != nil {
		return "", err
	}
	m, ch, err := next()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "no answer", nil
		}
		return "closed without a method: " + err.Error(), nil
	}
	switch m := m.(type) {
	case *wire.ConnectionClose:
		return fmt.Sprintf("connection.close %d %q class %d method %d", m.ReplyCode, m.ReplyText, m.ClassId, m.MethodId), nil
	case *wire.ChannelClose:
		return fmt.Sprintf("channel.close (ch %d) %d %q class %d method %d", ch, m.ReplyCode, m.ReplyText, m.ClassId, m.MethodId), nil
	}
	return m.Name(), nil
}
