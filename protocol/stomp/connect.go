package stomp

import (
	"strconv"
	"strings"
	"time"

	"github.com/go-stomp/stomp/v3/frame"
	"go.uber.org/zap"

	"github.com/parleymq/parley/protocol/auth"
	"github.com/parleymq/parley/protocol/stomp/wire"
)

// connect handles CONNECT and STOMP (STOMP 1.2 §CONNECT or STOMP Frame), in
// rabbit_stomp_processor:process_connect's order: version, credentials, vhost, heart-beats.
func (c *conn) connect(f *frame.Frame) error {
	v, ok := negotiate(f.Header.Get(frame.AcceptVersion))
	if !ok {
		return errorf("Version mismatch", "Supported versions are 1.0,1.1,1.2\n")
	}
	// Under the writer's lock: other goroutines (shutdown's ERROR, deliveries, receipts) read
	// the version while encoding, holding that lock.
	vb := c.w.Lock()
	c.version = v
	c.w.Unlock(vb)
	if v == wire.V10 {
		// RabbitMQ trims 1.0 header values (rabbit_stomp_util:trim_headers).
		for i := 0; i < f.Header.Len(); i++ {
			k, val := f.Header.GetAt(i)
			f.Header.Set(k, strings.TrimLeft(val, " \t"))
		}
	}
	login, hasLogin := f.Header.Contains(frame.Login)
	pass := f.Header.Get(frame.Passcode)
	if !hasLogin {
		if c.s.cfg.DefaultUser == "" {
			return errorf("Bad CONNECT", "Access refused for user ''")
		}
		login, pass = c.s.cfg.DefaultUser, c.s.cfg.DefaultPass
	}
	u, err := c.s.users.Authenticate(login, pass, c.nc.RemoteAddr())
	if err != nil {
		c.log.Warn("STOMP login failed", zap.String("user", login), zap.Error(err))
		if errorsIsLoopback(err) {
			return errorf("Bad CONNECT", "non-loopback access denied")
		}
		return errorf("Bad CONNECT", "Access refused for user '%s'", login)
	}
	vhostName := c.s.cfg.DefaultVHost
	if h, ok := f.Header.Contains(frame.Host); ok && h != "" {
		vhostName = h
	}
	vh, ok := c.s.b.VHost(vhostName)
	if !ok || !c.s.users.CanAccessVHost(u.Name, vhostName) {
		c.log.Warn("STOMP login failed: vhost access not allowed", zap.String("user", u.Name), zap.String("vhost", vhostName))
		return errorf("Bad CONNECT", "Virtual host '%s' access denied", vhostName)
	}
	cx, cy, err := parseHeartBeat(f.Header.Get(frame.HeartBeat))
	if err != nil {
		return err
	}
	// RabbitMQ sends heart-beats at the client's requested receive interval and expects them
	// at its send interval, in whole seconds, at least one (rabbit_stomp_processor:
	// ensure_heartbeats); STOMP 1.2 §Heart-beating lets the server choose so.
	send, recv := beatInterval(cy), beatInterval(cx)
	c.user, c.vhost, c.vhostName = u, vh, vhostName
	c.recvBeat = recv
	c.r.SetVersion(v)
	if recv > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(2 * recv))
	} else {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	b := c.w.Lock()
	b = wire.AppendCommand(b, frame.CONNECTED)
	b = append(b, "session:"+c.session+"\n"...)
	b = append(b, "heart-beat:"+strconv.FormatInt(send.Milliseconds(), 10)+","+strconv.FormatInt(recv.Milliseconds(), 10)+"\n"...)
	b = append(b, "version:"+v.String()+"\n"...)
	b = append(b, "server:"+c.s.cfg.Product+"/"+c.s.cfg.Version+"\n"...)
	b = wire.AppendBody(b, nil)
	c.w.Unlock(b)
	if send > 0 {
		c.w.SetHeartbeat(send/2, send-send/4)
	}
	c.connected.Store(true)
	c.log.Debug("STOMP connection opened", zap.String("user", u.Name), zap.String("vhost", vhostName), zap.Stringer("version", v))
	return nil
}

func errorsIsLoopback(err error) bool {
	ae, ok := err.(*auth.Error)
	return ok && ae.Kind == auth.ErrLoopbackOnly
}

// negotiate picks the highest version both sides speak; no accept-version header means 1.0.
func negotiate(accept string) (wire.Version, bool) {
	if accept == "" {
		return wire.V10, true
	}
	best, ok := wire.V10, false
	for _, s := range strings.Split(accept, ",") {
		var v wire.Version
		switch strings.TrimSpace(s) {
		case "1.0":
			v = wire.V10
		case "1.1":
			v = wire.V11
		case "1.2":
			v = wire.V12
		default:
			continue
		}
		if !ok || v > best {
			best, ok = v, true
		}
	}
	return best, ok
}

func parseHeartBeat(h string) (cx, cy int64, err error) {
	if h == "" {
		return 0, 0, nil
	}
	a, b, ok := strings.Cut(h, ",")
	if ok {
		cx, err = strconv.ParseInt(strings.TrimSpace(a), 10, 64)
		if err == nil {
			cy, err = strconv.ParseInt(strings.TrimSpace(b), 10, 64)
		}
	}
	if !ok || err != nil || cx < 0 || cy < 0 {
		return 0, 0, errorf("Invalid heart-beat header", "heart-beat '%s' is not two non-negative integers\n", h)
	}
	return cx, cy, nil
}

// beatInterval is rabbit_stomp_processor:millis_to_seconds: 0 stays 0, under a second is one
// second, otherwise whole seconds.
func beatInterval(ms int64) time.Duration {
	switch {
	case ms <= 0:
		return 0
	case ms < 1000:
		return time.Second
	}
	return time.Duration(ms/1000) * time.Second
}
