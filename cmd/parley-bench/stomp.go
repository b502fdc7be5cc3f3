package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
)

// The STOMP mode drives any STOMP 1.0-1.2 broker with github.com/go-stomp/stomp/v3, over TCP
// (stomp://host:port) or over WebSocket (ws://host:port/path, one frame per WebSocket text
// message, subprotocols v12.stomp, v11.stomp, v10.stomp) through coder/websocket.
// Destinations follow RabbitMQ's STOMP plugin: -dest queue sends to one /queue/ that every
// consumer competes on; -dest topic sends to a /topic/ that every consumer receives in full.
//
// With -receipt N, every Nth SEND asks for a RECEIPT and the sender waits for it; a receipt
// confirms every SEND before it on that connection (frames are processed in order), and
// only confirmed messages are owed to consumers. A last SEND with a receipt after the run
// confirms the tail. Without -receipt nothing is confirmed and every sent message is owed.

type stompConfig struct {
	common
	Dest        string
	Ack         string
	Prefetch    int
	Persistent  bool
	Receipt     int
	MultipleAck int
}

func parseSTOMPFlags(args []string, stderr io.Writer) (stompConfig, error) {
	var c stompConfig
	fs := flag.NewFlagSet("parley-bench stomp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs, "stomp://guest:guest@127.0.0.1:61613/")
	fs.StringVar(&c.Dest, "dest", "queue", "queue: one /queue/ shared by competing consumers; topic: one /topic/ every consumer receives")
	fs.StringVar(&c.Ack, "ack", "auto", "subscription ack mode: auto, client (cumulative, see -multiple-ack) or client-individual")
	fs.IntVar(&c.Prefetch, "prefetch", 0, "prefetch-count header on SUBSCRIBE (0 = not sent)")
	fs.BoolVar(&c.Persistent, "persistent", false, "send with persistent:true")
	fs.IntVar(&c.Receipt, "receipt", 0, "ask for a RECEIPT on every Nth SEND and wait for it (0 = no receipts)")
	fs.IntVar(&c.MultipleAck, "multiple-ack", 1, "ack client: ACK every Nth message (cumulative)")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	return c, c.normalise()
}

func (c *stompConfig) normalise() error {
	u, err := c.common.normalise("stomp", "tcp", "ws", "wss")
	if err != nil {
		return err
	}
	// Over WebSocket each frame is one text message, which must be UTF-8.
	c.textBodies = u.Scheme == "ws" || u.Scheme == "wss"
	switch {
	case c.Dest != "queue" && c.Dest != "topic":
		return badUsage("-dest %q: want queue or topic", c.Dest)
	case c.Ack != "auto" && c.Ack != "client" && c.Ack != "client-individual":
		return badUsage("-ack %q: want auto, client or client-individual", c.Ack)
	case c.Prefetch < 0 || c.Receipt < 0:
		return badUsage("-prefetch and -receipt must be >= 0")
	case c.MultipleAck < 1:
		return badUsage("-multiple-ack must be >= 1")
	case c.MultipleAck > 1 && c.Ack != "client":
		return badUsage("-multiple-ack needs -ack client (cumulative acks)")
	case c.Prefetch > 0 && c.MultipleAck > c.Prefetch:
		return badUsage("-multiple-ack %d > -prefetch %d would stall on every batch", c.MultipleAck, c.Prefetch)
	}
	return nil
}

func (c *stompConfig) shape() string {
	s := fmt.Sprintf("%dp/%dc %s %dB ack=%s", c.Producers, c.Consumers, c.Dest, c.Size, c.Ack)
	if c.MultipleAck > 1 {
		s += fmt.Sprintf("/%d", c.MultipleAck)
	}
	if c.Persistent {
		s += " persistent"
	}
	if c.Receipt > 0 {
		s += fmt.Sprintf(" receipt=%d", c.Receipt)
	}
	if c.Prefetch > 0 {
		s += fmt.Sprintf(" prefetch=%d", c.Prefetch)
	}
	if c.Rate > 0 {
		s += fmt.Sprintf(" rate=%g", c.Rate)
	}
	if u, err := url.Parse(c.URL); err == nil && (u.Scheme == "ws" || u.Scheme == "wss") {
		s += " websocket"
	}
	return s
}

func (c *stompConfig) ackMode() stomp.AckMode {
	switch c.Ack {
	case "client":
		return stomp.AckClient
	case "client-individual":
		return stomp.AckClientIndividual
	}
	return stomp.AckAuto
}

// dialSTOMP connects over TCP or WebSocket, as the URL says. The login comes from the URL
// (guest/guest if none); the host header is the vhost "/", as RabbitMQ expects.
func dialSTOMP(ctx context.Context, rawURL string) (*stomp.Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse url: %w", err)
	}
	login, pass := "guest", "guest"
	if u.User != nil {
		login = u.User.Username()
		pass, _ = u.User.Password()
	}
	// A receipt that does not come is an error of the run, reported as such, well before the
	// run's own bound; the receipt for DISCONNECT, after the measurement, is not worth a wait.
	opts := []func(*stomp.Conn) error{stomp.ConnOpt.Login(login, pass), stomp.ConnOpt.Host("/"),
		stomp.ConnOpt.Logger(quietLogger{}), stomp.ConnOpt.RcvReceiptTimeout(15 * time.Second),
		stomp.ConnOpt.DisconnectReceiptTimeout(2 * time.Second),
		// go-stomp's 4 KiB read buffer takes a read system call per three or four 1 KiB
		// frames; a larger one takes a burst in one (as readConn does for AMQP and MQTT).
		stomp.ConnOpt.ReadBufferSize(readBuf)}
	var nc io.ReadWriteCloser
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch u.Scheme {
	case "ws", "wss":
		ws, _, err := websocket.Dial(dctx, rawURL, &websocket.DialOptions{Subprotocols: []string{"v12.stomp", "v11.stomp", "v10.stomp"}})
		if err != nil {
			return nil, fmt.Errorf("websocket dial %s: %w", redactedURL(rawURL), err)
		}
		ws.SetReadLimit(256 << 20)
		nc = &wsStream{ws: ws}
	default:
		var d net.Dialer
		if nc, err = d.DialContext(dctx, "tcp", u.Host); err != nil {
			return nil, fmt.Errorf("dial %s: %w", redactedURL(rawURL), err)
		}
	}
	conn, err := stomp.ConnectWithContext(dctx, nc, opts...)
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("stomp connect %s: %w", redactedURL(rawURL), err)
	}
	return conn, nil
}

// syncSTOMP sends an empty frame with a receipt to dest (a topic nobody subscribes to) and
// waits for the receipt: every frame sent before it on conn has then been processed.
func syncSTOMP(conn *stomp.Conn, dest string) error {
	return conn.Send(dest, "text/plain", nil, stomp.SendOpt.Receipt)
}

func runSTOMP(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseSTOMPFlags(args, stderr)
	return runMode("stomp", &cfg.common, err, stdout, stderr, func(ctx context.Context) (*Result, error) {
		return benchSTOMP(ctx, cfg, stderr)
	})
}

func benchSTOMP(ctx context.Context, cfg stompConfig, stderr io.Writer) (*Result, error) {
	runID := newRunID()
	dest := "/queue/parley-bench-" + runID
	groups := min(cfg.Consumers, 1)
	groupOf := func(int) int { return 0 }
	if cfg.Dest == "topic" {
		dest = "/topic/parley-bench." + runID
		groups = cfg.Consumers
		groupOf = func(j int) int { return j }
	}
	syncDest := "/topic/parley-bench." + runID + ".sync"
	allGroups := make([]int, groups)
	for g := range allGroups {
		allGroups[g] = g
	}
	pl := plan{
		mode: "stomp", cfg: &cfg.common, shape: cfg.shape(), confirms: cfg.Receipt > 0,
		groups: groups, groupOf: groupOf,
		owedTo: func(int) []int { return allGroups },
		produce: func(ctx context.Context, p *producer, quota uint64, stop *atomic.Bool, ready func(), start <-chan struct{}) error {
			return stompProduce(ctx, cfg, p, dest, syncDest, quota, stop, ready, start)
		},
		consume: func(ctx context.Context, c *consumer, t *Tracker, ready func()) error {
			return stompConsume(ctx, cfg, c, dest, syncDest, t, ready)
		},
	}
	return execute(ctx, pl, stderr)
}

func stompProduce(ctx context.Context, cfg stompConfig, p *producer, dest, syncDest string, quota uint64,
	stop *atomic.Bool, ready func(), start <-chan struct{}) error {
	conn, err := dialSTOMP(ctx, cfg.URL)
	if err != nil {
		return fmt.Errorf("producer %d: %w", p.id, err)
	}
	defer func() { _ = conn.Disconnect() }()
	opts := []func(*frame.Frame) error{}
	if cfg.Persistent {
		opts = append(opts, stomp.SendOpt.Header("persistent", "true"))
	}
	withReceipt := append(append([]func(*frame.Frame) error{}, opts...), stomp.SendOpt.Receipt)

	// With receipts, the window holds the sends not yet covered by a receipt; the sender
	// itself settles them when a receipt arrives (go-stomp waits for it inside Send).
	w := newWindow(cfg.Receipt)
	var unconfirmed []uint64
	settle := func() {
		for _, s := range unconfirmed {
			p.confirmed(s, true)
			w.release()
		}
		unconfirmed = unconfirmed[:0]
	}
	ready()
	select {
	case <-start:
	case <-ctx.Done():
	}
	pubErr := p.publishLoop(ctx, &cfg.common, quota, stop, w, func(seq uint64, body []byte) error {
		// go-stomp writes the frame from its own goroutine; the loop reuses body.
		b := append([]byte(nil), body...)
		if w == nil {
			return conn.Send(dest, "application/octet-stream", b, opts...)
		}
		unconfirmed = append(unconfirmed, seq)
		if len(unconfirmed) < cfg.Receipt {
			return conn.Send(dest, "application/octet-stream", b, opts...)
		}
		if err := conn.Send(dest, "application/octet-stream", b, withReceipt...); err != nil {
			return err
		}
		settle()
		return nil
	})
	if w != nil && pubErr == nil && len(unconfirmed) > 0 {
		if err := syncSTOMP(conn, syncDest); err != nil {
			return fmt.Errorf("producer %d: receipt for the last %d sends: %w", p.id, len(unconfirmed), err)
		}
		settle()
	}
	return pubErr
}

func stompConsume(ctx context.Context, cfg stompConfig, c *consumer, dest, syncDest string, t *Tracker, ready func()) error {
	conn, err := dialSTOMP(ctx, cfg.URL)
	if err != nil {
		return fmt.Errorf("consumer %d: %w", c.id, err)
	}
	defer func() { _ = conn.Disconnect() }()
	var opts []func(*frame.Frame) error
	if cfg.Prefetch > 0 {
		opts = append(opts, stomp.SubscribeOpt.Header("prefetch-count", fmt.Sprint(cfg.Prefetch)))
	}
	sub, err := conn.Subscribe(dest, cfg.ackMode(), opts...)
	if err != nil {
		return fmt.Errorf("consumer %d: subscribe %s: %w", c.id, dest, err)
	}
	// SUBSCRIBE has no reply; a receipt on a later frame proves the broker processed it, so
	// no message published to a topic after ready() can miss this subscriber.
	if err := syncSTOMP(conn, syncDest); err != nil {
		return fmt.Errorf("consumer %d: receipt after subscribe: %w", c.id, err)
	}
	ready()

	// go-stomp runs one goroutine that both hands frames to subscriptions and writes frames
	// out: while it waits for this loop to take a message, an ACK from this loop waits for
	// it, and both stop for good. So acks go out from their own goroutine (acker) and this
	// loop only ever reads; once the run is over, the subscription is drained until the
	// connection closes, for the same reason.
	var ack *acker
	if cfg.Ack != "auto" {
		ack = newAcker(conn)
		defer ack.stop()
	}
	defer func() {
		go func() {
			for range sub.C {
			}
		}()
	}()
	idle := time.NewTicker(20 * time.Millisecond)
	defer idle.Stop()
	var pending int
	var last *stomp.Message
	ackLast := func() error {
		if pending == 0 {
			return nil
		}
		pending = 0
		return ack.add(last)
	}
	for {
		select {
		case <-ctx.Done():
			_ = ackLast()
			return nil
		case <-idle.C:
			if err := ackLast(); err != nil {
				return fmt.Errorf("consumer %d: %w", c.id, err)
			}
		case m, ok := <-sub.C:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("consumer %d: subscription closed", c.id)
			}
			if m.Err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("consumer %d: %w", c.id, m.Err)
			}
			c.record(m.Body, m.Header.Get("redelivered") == "true", t)
			if ack != nil {
				pending++
				last = m
				if pending >= cfg.MultipleAck {
					if err := ackLast(); err != nil {
						return fmt.Errorf("consumer %d: %w", c.id, err)
					}
				}
			}
		}
	}
}

// acker sends ACK frames from its own goroutine, in order, from an unbounded list: bounding
// it would bring back the deadlock it exists to avoid.
type acker struct {
	conn *stomp.Conn
	mu   sync.Mutex
	more *sync.Cond
	list []*stomp.Message
	err  error
	done bool
	exit chan struct{}
}

func newAcker(conn *stomp.Conn) *acker {
	a := &acker{conn: conn, exit: make(chan struct{})}
	a.more = sync.NewCond(&a.mu)
	go a.run()
	return a
}

// add queues m's ACK; it returns the first ACK error, if one happened.
func (a *acker) add(m *stomp.Message) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	a.list = append(a.list, m)
	a.more.Signal()
	return nil
}

func (a *acker) run() {
	defer close(a.exit)
	for {
		a.mu.Lock()
		for len(a.list) == 0 && !a.done {
			a.more.Wait()
		}
		batch := a.list
		a.list = nil
		done := a.done
		a.mu.Unlock()
		for _, m := range batch {
			if err := a.conn.Ack(m); err != nil {
				a.mu.Lock()
				a.err = fmt.Errorf("ack: %w", err)
				a.mu.Unlock()
				return
			}
		}
		if done && len(batch) == 0 {
			return
		}
	}
}

// stop sends what is queued, bounded: a connection that no longer takes frames must not
// hold the run.
func (a *acker) stop() {
	a.mu.Lock()
	a.done = true
	a.more.Signal()
	a.mu.Unlock()
	select {
	case <-a.exit:
	case <-time.After(2 * time.Second):
	}
}

// quietLogger drops go-stomp's log lines ("subscription closed" on every disconnect, on
// stderr); errors reach the run through return values instead.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any)   {}
func (quietLogger) Debug(string)            {}
func (quietLogger) Infof(string, ...any)    {}
func (quietLogger) Info(string)             {}
func (quietLogger) Warningf(string, ...any) {}
func (quietLogger) Warning(string)          {}
func (quietLogger) Errorf(string, ...any)   {}
func (quietLogger) Error(string)            {}

// wsStream carries a STOMP byte stream over WebSocket, as Web-STOMP clients do: each Write
// (go-stomp flushes one whole frame per write) is one text message, which is why bodies are
// text in this mode (payload.go); reads accept text or binary messages, as brokers send
// either. websocket.NetConn cannot do this: it reads and writes one message type only.
type wsStream struct {
	ws *websocket.Conn
	r  io.Reader // the current message, nil between messages
}

func (s *wsStream) Read(p []byte) (int, error) {
	for {
		if s.r == nil {
			_, r, err := s.ws.Reader(context.Background())
			if err != nil {
				return 0, fmt.Errorf("websocket read: %w", err)
			}
			s.r = r
		}
		n, err := s.r.Read(p)
		if errors.Is(err, io.EOF) {
			s.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (s *wsStream) Write(p []byte) (int, error) {
	if err := s.ws.Write(context.Background(), websocket.MessageText, p); err != nil {
		return 0, fmt.Errorf("websocket write: %w", err)
	}
	return len(p), nil
}

func (s *wsStream) Close() error { return s.ws.CloseNow() }
