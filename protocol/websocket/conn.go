package websocket

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// messageConn is the net.Conn a text route's handler gets: reads return the payloads of text
// and binary messages alike (stomp.js sends a frame with a binary body as a binary message,
// and RabbitMQ's Web-STOMP accepts both), writes send one text message each. coder/websocket's
// NetConn accepts only one message type, hence this.
//
// Deadlines end the connection when they pass, as NetConn's do: the STOMP session uses them
// only for timeouts after which it closes anyway (handshake, missed heart-beats, draining
// after an ERROR).
type messageConn struct {
	c              *websocket.Conn
	local, remote  net.Addr
	ctx            context.Context
	cancel         context.CancelFunc
	rmu, wmu, tmu  sync.Mutex
	r              io.Reader
	rTimer, wTimer *time.Timer
}

func newMessageConn(c *websocket.Conn, local, remote net.Addr) *messageConn {
	// The session's frame reader enforces its own limits on frame sizes.
	c.SetReadLimit(-1)
	ctx, cancel := context.WithCancel(context.Background())
	return &messageConn{c: c, local: local, remote: remote, ctx: ctx, cancel: cancel}
}

func (m *messageConn) Read(p []byte) (int, error) {
	m.rmu.Lock()
	defer m.rmu.Unlock()
	for {
		if m.r == nil {
			_, r, err := m.c.Reader(m.ctx)
			if err != nil {
				switch websocket.CloseStatus(err) {
				case websocket.StatusNormalClosure, websocket.StatusGoingAway:
					return 0, io.EOF
				}
				return 0, err
			}
			m.r = r
		}
		n, err := m.r.Read(p)
		if errors.Is(err, io.EOF) {
			m.r = nil // the next message continues the stream
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (m *messageConn) Write(p []byte) (int, error) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if err := m.c.Write(m.ctx, websocket.MessageText, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (m *messageConn) Close() error {
	m.tmu.Lock()
	for _, t := range []*time.Timer{m.rTimer, m.wTimer} {
		if t != nil {
			t.Stop()
		}
	}
	m.tmu.Unlock()
	err := m.c.Close(websocket.StatusNormalClosure, "")
	m.cancel()
	return err
}

func (m *messageConn) LocalAddr() net.Addr  { return m.local }
func (m *messageConn) RemoteAddr() net.Addr { return m.remote }

func (m *messageConn) SetDeadline(t time.Time) error {
	_ = m.SetReadDeadline(t)
	return m.SetWriteDeadline(t)
}

func (m *messageConn) SetReadDeadline(t time.Time) error {
	m.tmu.Lock()
	defer m.tmu.Unlock()
	m.rTimer = m.arm(m.rTimer, t)
	return nil
}

func (m *messageConn) SetWriteDeadline(t time.Time) error {
	m.tmu.Lock()
	defer m.tmu.Unlock()
	m.wTimer = m.arm(m.wTimer, t)
	return nil
}

// arm replaces a deadline timer; a passed deadline cancels the connection's context, which
// makes coder/websocket close it and fail pending and later reads and writes.
func (m *messageConn) arm(old *time.Timer, t time.Time) *time.Timer {
	if old != nil {
		old.Stop()
	}
	if t.IsZero() {
		return nil
	}
	return time.AfterFunc(time.Until(t), m.cancel)
}

// addrString is a net.Addr for an address we only have as text.
type addrString string

func (a addrString) Network() string { return "tcp" }
func (a addrString) String() string  { return string(a) }

// remoteAddr parses net/http's RemoteAddr, so protocol code that checks for loopback (the
// guest user) sees a *net.TCPAddr as on a plain socket.
func remoteAddr(s string) net.Addr {
	if a, err := net.ResolveTCPAddr("tcp", s); err == nil {
		return a
	}
	return addrString(s)
}
