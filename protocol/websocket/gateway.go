package websocket

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
)

// Handler serves one upgraded connection until it ends. It owns c and must close it.
type Handler func(c net.Conn)

// Route binds a subprotocol to the adapter that speaks it.
type Route struct {
	// Subprotocol is the Sec-WebSocket-Protocol value, such as "v12.stomp" or "mqtt".
	Subprotocol string
	// Binary selects binary WebSocket messages both ways (MQTT). False writes text messages
	// (STOMP, as RabbitMQ's Web-STOMP sends by default and stomp.js expects) and reads text
	// and binary ones.
	Binary  bool
	Handler Handler
}

// Config configures a gateway.
type Config struct {
	// Path is the HTTP path of the WebSocket endpoint. Default "/ws".
	Path string
	// AllowedOrigins lists host patterns (path.Match, e.g. "app.example.com", "*.example.com",
	// "127.0.0.1:*") of browser Origins allowed besides the request's own host. Empty means
	// same host only, which stops other sites' pages from using a visitor's browser to
	// connect (cross-site WebSocket hijacking).
	AllowedOrigins []string
	// Fallback, when not empty, is the subprotocol used for clients that ask for none
	// (RabbitMQ's Web-STOMP and Web-MQTT accept those). Empty refuses them.
	Fallback string
}

// Gateway serves WebSocket upgrades on the listeners given to Serve.
type Gateway struct {
	cfg    Config
	log    *zap.Logger
	routes map[string]Route
	protos []string
	srv    *http.Server

	mu     sync.Mutex
	closed bool
}

// New builds a gateway for routes, preferred first when a client offers several.
func New(cfg Config, log *zap.Logger, routes ...Route) *Gateway {
	if cfg.Path == "" {
		cfg.Path = "/ws"
	}
	g := &Gateway{cfg: cfg, log: log, routes: map[string]Route{}}
	for _, r := range routes {
		g.routes[r.Subprotocol] = r
		g.protos = append(g.protos, r.Subprotocol)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(cfg.Path, g.upgrade)
	g.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(log),
	}
	return g
}

// Serve accepts HTTP connections on ln until ln or the gateway is closed, then returns nil.
func (g *Gateway) Serve(ln net.Listener) error {
	err := g.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Close stops accepting. Upgraded connections belong to their adapters, which close them.
func (g *Gateway) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	_ = g.srv.Close()
}

func (g *Gateway) upgrade(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:   g.protos,
		OriginPatterns: g.cfg.AllowedOrigins,
	})
	if err != nil {
		// Accept has answered (403 for a foreign Origin, 400 for a bad upgrade).
		g.log.Info("WebSocket upgrade refused", zap.String("remote", r.RemoteAddr),
			zap.String("origin", r.Header.Get("Origin")), zap.Error(err))
		return
	}
	proto := c.Subprotocol()
	if proto == "" {
		proto = g.cfg.Fallback
	}
	route, ok := g.routes[proto]
	if !ok {
		g.log.Info("WebSocket client offered no subprotocol we serve", zap.String("remote", r.RemoteAddr),
			zap.Strings("offered", r.Header.Values("Sec-WebSocket-Protocol")))
		_ = c.Close(websocket.StatusPolicyViolation, "no supported subprotocol; use one of the offered")
		return
	}
	if route.Binary {
		// The connection outlives this request's context, which net/http cancels when the
		// handler returns.
		route.Handler(websocket.NetConn(context.Background(), c, websocket.MessageBinary))
		return
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	route.Handler(newMessageConn(c, local, remoteAddr(r.RemoteAddr)))
}
