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

	paho "github.com/eclipse/paho.mqtt.golang"
)

// The MQTT mode drives any MQTT 3.1.1 broker with github.com/eclipse/paho.mqtt.golang, the
// Eclipse Go client most MQTT users run. Every publisher and subscriber has its own
// connection with a clean session; all publish to one topic of the run. Each subscriber
// (or, with -shared, the one $share group) receives every message, so N publishers and one
// subscriber is fan-in and one publisher and N subscribers is fan-out.
//
// QoS 1 and 2 are confirmed: a publish holds one slot of a -window of unacknowledged
// messages until its PUBACK (QoS 1) or PUBCOMP (QoS 2), and only acknowledged messages are
// owed to subscribers. QoS 0 promises nothing, so its lost column is what the broker dropped
// under this load, reported, not an error.

type mqttConfig struct {
	common
	QoS       int
	Window    int
	Shared    bool
	KeepAlive time.Duration
	// Persistent connects every client with clean session false: a persistent session
	// (durable session queue; on Parley, QoS 2 state and the connection kept with it).
	Persistent bool
}

func parseMQTTFlags(args []string, stderr io.Writer) (mqttConfig, error) {
	var c mqttConfig
	fs := flag.NewFlagSet("parley-bench mqtt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs, "tcp://127.0.0.1:1883")
	fs.IntVar(&c.QoS, "qos", 1, "QoS of every publish and subscription: 0, 1 or 2")
	fs.IntVar(&c.Window, "window", 64, "QoS 1/2: at most this many unacknowledged publishes per publisher")
	fs.BoolVar(&c.Shared, "shared", false, "subscribers share one $share/<group>/<topic> subscription (competing) instead of each receiving every message")
	fs.DurationVar(&c.KeepAlive, "keepalive", 30*time.Second, "MQTT keep-alive of every connection")
	fs.BoolVar(&c.Persistent, "persistent", false, "connect with clean session false (persistent sessions, each under a new client id)")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	return c, c.normalise()
}

func (c *mqttConfig) normalise() error {
	if _, err := c.common.normalise(mqttSchemes...); err != nil {
		return err
	}
	switch {
	case c.QoS < 0 || c.QoS > 2:
		return badUsage("-qos %d: want 0, 1 or 2", c.QoS)
	case c.QoS > 0 && c.Window < 1:
		return badUsage("-window must be >= 1 with QoS %d", c.QoS)
	case c.Window > 65535:
		// MQTT packet identifiers are 16 bits: no more can be in flight on one connection.
		return badUsage("-window %d: at most 65535 packet identifiers can be in flight", c.Window)
	case c.KeepAlive < 0:
		return badUsage("-keepalive must be >= 0")
	}
	if c.QoS == 0 {
		c.Window = 0
	}
	return nil
}

// mqttSchemes are the URL schemes paho dials: plain TCP (tcp:// or mqtt://) and WebSocket.
var mqttSchemes = []string{"tcp", "mqtt", "ws"}

func (c *mqttConfig) shape() string {
	s := fmt.Sprintf("%dp/%dc qos%d %dB", c.Producers, c.Consumers, c.QoS, c.Size)
	if c.Window > 0 {
		s += fmt.Sprintf(" window=%d", c.Window)
	}
	if c.Shared {
		s += " shared"
	}
	if c.Rate > 0 {
		s += fmt.Sprintf(" rate=%g", c.Rate)
	}
	return s
}

// mqttOptions are the paho options every connection of a run uses: no reconnects (a lost
// connection is an error of the run, not something to paper over), in-order handlers.
func mqttOptions(rawURL, clientID string, keepAlive time.Duration) *paho.ClientOptions {
	return mqttSessionOptions(rawURL, clientID, keepAlive, false)
}

// mqttSessionOptions is mqttOptions with a persistent session (clean session false) when
// persistent is set.
func mqttSessionOptions(rawURL, clientID string, keepAlive time.Duration, persistent bool) *paho.ClientOptions {
	o := paho.NewClientOptions().AddBroker(rawURL).SetClientID(clientID).SetCleanSession(!persistent).
		SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
		SetKeepAlive(keepAlive).SetConnectTimeout(10 * time.Second).SetWriteTimeout(0)
	if u, err := url.Parse(rawURL); err == nil && u.User != nil {
		o.SetUsername(u.User.Username())
		if p, ok := u.User.Password(); ok {
			o.SetPassword(p)
		}
	}
	return o
}

// withReadBuffer makes a message connection read through a readConn (corkconn.go) over TCP;
// WebSocket and TLS connections keep paho's own dialing.
func withReadBuffer(o *paho.ClientOptions) *paho.ClientOptions {
	if len(o.Servers) == 0 || (o.Servers[0].Scheme != "tcp" && o.Servers[0].Scheme != "mqtt") {
		return o
	}
	return o.SetCustomOpenConnectionFn(func(u *url.URL, opts paho.ClientOptions) (net.Conn, error) {
		c, err := net.DialTimeout("tcp", u.Host, opts.ConnectTimeout)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", u.Host, err)
		}
		return newReadConn(c), nil
	})
}

// waitToken waits for t, bounded by ctx.
func waitToken(ctx context.Context, t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func runMQTT(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseMQTTFlags(args, stderr)
	return runMode("mqtt", &cfg.common, err, stdout, stderr, func(ctx context.Context) (*Result, error) {
		return benchMQTT(ctx, cfg, stderr)
	})
}

func benchMQTT(ctx context.Context, cfg mqttConfig, stderr io.Writer) (*Result, error) {
	runID := newRunID()
	topic := "parley-bench/" + runID
	filter := topic
	groups := cfg.Consumers
	groupOf := func(j int) int { return j }
	if cfg.Shared {
		// [MQTT-5 4.8.2] a shared subscription: each message goes to one member of the group.
		filter = "$share/pb-" + runID + "/" + topic
		groups = min(cfg.Consumers, 1)
		groupOf = func(int) int { return 0 }
	}
	allGroups := make([]int, groups)
	for g := range allGroups {
		allGroups[g] = g
	}
	pl := plan{
		mode: "mqtt", cfg: &cfg.common, shape: cfg.shape(), confirms: cfg.QoS > 0,
		groups: groups, groupOf: groupOf,
		owedTo: func(int) []int { return allGroups },
		produce: func(ctx context.Context, p *producer, quota uint64, stop *atomic.Bool, ready func(), start <-chan struct{}) error {
			return mqttProduce(ctx, cfg, p, fmt.Sprintf("pb-%s-p%d", runID, p.id), topic, quota, stop, ready, start)
		},
		consume: func(ctx context.Context, c *consumer, t *Tracker, ready func()) error {
			return mqttConsume(ctx, cfg, c, fmt.Sprintf("pb-%s-c%d", runID, c.id), filter, t, ready)
		},
	}
	return execute(ctx, pl, stderr)
}

// connectMQTT connects a client, reporting connection loss on lost (buffered, one value).
func connectMQTT(ctx context.Context, opts *paho.ClientOptions) (paho.Client, <-chan error, error) {
	lost := make(chan error, 1)
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) {
		select {
		case lost <- err:
		default:
		}
	})
	client := paho.NewClient(opts)
	if err := waitToken(ctx, client.Connect()); err != nil {
		return nil, nil, fmt.Errorf("connect %s as %s: %w", redactedURL(opts.Servers[0].String()), opts.ClientID, err)
	}
	return client, lost, nil
}

type mqttPending struct {
	seq uint64
	tok paho.Token
}

func mqttProduce(ctx context.Context, cfg mqttConfig, p *producer, clientID, topic string, quota uint64,
	stop *atomic.Bool, ready func(), start <-chan struct{}) error {
	client, lost, err := connectMQTT(ctx, withReadBuffer(mqttSessionOptions(cfg.URL, clientID, cfg.KeepAlive, cfg.Persistent)))
	if err != nil {
		return fmt.Errorf("producer %d: %w", p.id, err)
	}
	defer client.Disconnect(250)

	// With QoS 1/2 a listener takes the publish tokens in order and settles each when the
	// broker acknowledged it; the window bounds how many are outstanding.
	w := newWindow(cfg.Window)
	var pending chan mqttPending
	stopListener := make(chan struct{})
	listenerDone := make(chan struct{})
	if w != nil {
		pending = make(chan mqttPending, cfg.Window)
		go func() {
			defer close(listenerDone)
			for {
				var m mqttPending
				select {
				case m = <-pending:
				case <-stopListener:
					return
				}
				select {
				case <-m.tok.Done():
					p.confirmed(m.seq, m.tok.Error() == nil)
					w.release()
				case <-stopListener:
					return
				}
			}
		}()
	} else {
		close(listenerDone)
	}

	ready()
	select {
	case <-start:
	case <-ctx.Done():
	}
	qos := byte(cfg.QoS)
	pubErr := p.publishLoop(ctx, &cfg.common, quota, stop, w, func(seq uint64, body []byte) error {
		select {
		case err := <-lost:
			return fmt.Errorf("connection lost: %w", err)
		default:
		}
		// paho writes the payload from another goroutine after Publish returns, so it gets
		// its own copy of the body, which the loop reuses.
		tok := client.Publish(topic, qos, false, append([]byte(nil), body...))
		if pending != nil {
			pending <- mqttPending{seq: seq, tok: tok}
			return nil
		}
		select {
		case <-tok.Done():
			return tok.Error()
		default:
			return nil
		}
	})
	if w != nil {
		if pubErr == nil {
			w.fill(ctx, cfg.Drain)
		}
		close(stopListener)
		<-listenerDone
	}
	return pubErr
}

func mqttConsume(ctx context.Context, cfg mqttConfig, c *consumer, clientID, filter string, t *Tracker, ready func()) error {
	client, lost, err := connectMQTT(ctx, withReadBuffer(mqttSessionOptions(cfg.URL, clientID, cfg.KeepAlive, cfg.Persistent)))
	if err != nil {
		return fmt.Errorf("consumer %d: %w", c.id, err)
	}
	defer client.Disconnect(250)
	// paho calls the handler from its own goroutine, one message at a time (OrderMatters);
	// the mutex only fences it off once the run has ended and the histogram is being read.
	var mu sync.Mutex
	closed := false
	defer func() { mu.Lock(); closed = true; mu.Unlock() }()
	tok := client.Subscribe(filter, byte(cfg.QoS), func(_ paho.Client, m paho.Message) {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			c.record(m.Payload(), m.Duplicate(), t)
		}
	})
	if err := waitToken(ctx, tok); err != nil {
		return fmt.Errorf("consumer %d: subscribe %s: %w", c.id, filter, err)
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		if q, ok := st.Result()[filter]; ok && q == 0x80 { // [MQTT-3.9.3-2] failure return code
			return fmt.Errorf("consumer %d: subscribe %s: %w", c.id, filter, errSubscribeRefused)
		}
	}
	ready()
	select {
	case <-ctx.Done():
		return nil
	case err := <-lost:
		return fmt.Errorf("consumer %d: connection lost: %w", c.id, err)
	}
}

var errSubscribeRefused = errors.New("refused by the broker (SUBACK 0x80)")
