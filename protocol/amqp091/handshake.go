package amqp091

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/parleymq/parley/protocol/amqp091/wire"
)

// errHandshake ends a handshake without anything more to send.
var errHandshake = errors.New("amqp091: handshake refused")

// protocolHeader09 is AMQP 0-9's header, which RabbitMQ accepts as 0-9-1
// (rabbit_reader:version_negotiation/2).
var protocolHeader09 = []byte("AMQP\x01\x01\x00\x09")

// handshake runs the connection negotiation (AMQP 0-9-1 §4.2.2, §2.2.4): protocol header,
// start/start-ok with SASL, tune/tune-ok, open/open-ok.
func (c *conn) handshake() error {
	hdr, err := c.r.ReadProtocolHeader()
	if err != nil {
		return err
	}
	if !bytes.Equal(hdr[:], wire.ProtocolHeader) && !bytes.Equal(hdr[:], protocolHeader09) {
		// AMQP 0-9-1 §4.2.2: answer with the version we support, then close.
		_, _ = c.nc.Write(wire.ProtocolHeader)
		return fmt.Errorf("bad protocol header %q: %w", hdr[:], errHandshake)
	}
	b := c.w.Lock()
	c.w.Unlock(wire.AppendMethodFrame(b, 0, &wire.ConnectionStart{
		VersionMajor:     0,
		VersionMinor:     9,
		ServerProperties: c.s.serverProps,
		Mechanisms:       "PLAIN AMQPLAIN",
		Locales:          "en_US",
	}))

	m, err := c.handshakeMethod()
	if err != nil {
		return err
	}
	startOk, ok := m.(*wire.ConnectionStartOk)
	if !ok {
		return fmt.Errorf("expected connection.start-ok, got %s: %w", m.Name(), errHandshake)
	}
	if caps, ok := startOk.ClientProperties["capabilities"].(wire.Table); ok {
		c.capCancelNotify, _ = caps["consumer_cancel_notify"].(bool)
		c.capBlocked, _ = caps["connection.blocked"].(bool)
		c.capAuthFailure, _ = caps["authentication_failure_close"].(bool)
	}
	mechanism := startOk.Mechanism
	if err := c.authenticate(mechanism, []byte(startOk.Response)); err != nil {
		c.log.Info("authentication failed", zap.String("mechanism", mechanism), zap.Error(err))
		if errors.Is(err, errBadMechanism) {
			return err
		}
		// RabbitMQ: rabbit_reader:auth_fail/5. Only clients with authentication_failure_close
		// get a connection.close; the others see the socket close.
		if c.capAuthFailure {
			b := c.w.Lock()
			c.w.Unlock(wire.AppendMethodFrame(b, 0, &wire.ConnectionClose{
				ReplyCode: accessRefused,
				ReplyText: fmt.Sprintf("ACCESS_REFUSED - Login was refused using authentication mechanism %s. "+
					"For details see the broker logfile.", mechanism),
			}))
		}
		return err
	}

	var hb uint16
	if c.s.cfg.Heartbeat > 0 {
		hb = uint16(min(c.s.cfg.Heartbeat/time.Second, 65535))
	}
	b = c.w.Lock()
	c.w.Unlock(wire.AppendMethodFrame(b, 0, &wire.ConnectionTune{
		ChannelMax: c.s.cfg.ChannelMax, FrameMax: c.s.cfg.FrameMax, Heartbeat: hb,
	}))
	m, err = c.handshakeMethod()
	if err != nil {
		return err
	}
	tuneOk, ok := m.(*wire.ConnectionTuneOk)
	if !ok {
		return fmt.Errorf("expected connection.tune-ok, got %s: %w", m.Name(), errHandshake)
	}
	// RabbitMQ: rabbit_reader:validate_negotiated_integer_value/3. A client value of 0 means
	// "no limit", which is above the server's, and is refused like any value above it.
	if err := negotiate("frame_max", frameMinSize, uint64(c.s.cfg.FrameMax), uint64(tuneOk.FrameMax)); err != nil {
		return err
	}
	if err := negotiate("channel_max", 1, uint64(c.s.cfg.ChannelMax), uint64(tuneOk.ChannelMax)); err != nil {
		return err
	}
	c.frameMax, c.channelMax = tuneOk.FrameMax, tuneOk.ChannelMax
	c.r.SetFrameMax(c.frameMax)
	c.heartbeat = time.Duration(tuneOk.Heartbeat) * time.Second

	m, err = c.handshakeMethod()
	if err != nil {
		return err
	}
	open, ok := m.(*wire.ConnectionOpen)
	if !ok {
		return fmt.Errorf("expected connection.open, got %s: %w", m.Name(), errHandshake)
	}
	if e := c.openVHost(open.VirtualHost); e != nil {
		c.handshakeClose(e.withMethod(open.ClassID(), open.MethodID()))
		return e
	}
	b = c.w.Lock()
	c.w.Unlock(wire.AppendMethodFrame(b, 0, &wire.ConnectionOpenOk{}))
	if c.heartbeat > 0 {
		// AMQP 0-9-1 §4.2.7: a heartbeat after half the interval of write silence.
		c.w.SetHeartbeat(c.heartbeat/2, c.heartbeat/2)
	}
	// RabbitMQ logs the same event at info: "user 'u' authenticated and granted access to vhost".
	c.log.Info("connection opened", zap.String("user", c.userName), zap.String("vhost", c.vhostName))
	return nil
}

// negotiate applies RabbitMQ's tune-ok checks; failures close the socket.
func negotiate(field string, minimum, server, client uint64) error {
	if client != 0 && client < minimum {
		return fmt.Errorf("negotiated %s = %d is lower than the minimum allowed value (%d): %w",
			field, client, minimum, errHandshake)
	}
	if server != 0 && (client == 0 || client > server) {
		return fmt.Errorf("negotiated %s = %d is higher than the maximum allowed value (%d): %w",
			field, client, server, errHandshake)
	}
	return nil
}

// handshakeMethod reads the next method on channel 0, skipping heartbeats. Anything else ends
// the handshake: RabbitMQ closes the socket on unexpected input before the connection is open.
func (c *conn) handshakeMethod() (wire.Method, error) {
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			return nil, err
		}
		if f.Type == wire.FrameHeartbeat {
			continue
		}
		if f.Type != wire.FrameMethod || f.Channel != 0 {
			return nil, fmt.Errorf("frame type %d on channel %d during handshake: %w", f.Type, f.Channel, errHandshake)
		}
		m, err := c.dec.Decode(f.Payload)
		if err != nil {
			return nil, fmt.Errorf("decode handshake method: %w", err)
		}
		return m, nil
	}
}

// handshakeClose sends connection.close and waits (bounded) for close-ok.
func (c *conn) handshakeClose(e *amqpError) {
	c.beginClose(e, closeOkWait)
	for {
		f, err := c.r.ReadFrame()
		if err != nil || c.closingFrame(f) {
			return
		}
	}
}
