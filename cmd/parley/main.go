// Command parley is the Parley broker: one binary serving AMQP 0-9-1 (and, as they land, MQTT,
// STOMP and WebSocket) over one exchange/queue core. It wires configuration, logging, the core
// and the listeners together and holds no logic of its own.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/protocol/amqp091"
	"github.com/parleymq/parley/protocol/auth"
	"github.com/parleymq/parley/protocol/mqtt"
	"github.com/parleymq/parley/protocol/stomp"
	"github.com/parleymq/parley/protocol/stomp/wire"
	"github.com/parleymq/parley/protocol/websocket"
	"github.com/parleymq/parley/storage"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	cfg, err := LoadConfig(os.Args[1:], os.LookupEnv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "parley: %v\n", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		if errors.Is(err, errReexec) {
			// A cluster node that stopped serving comes back as a standby (cluster.go).
			err = reexec()
		}
		fmt.Fprintf(os.Stderr, "parley: %v\n", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("%w: log_level: %v", errUsage, err)
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Encoding = "console"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.DisableStacktrace = true
	zc.Sampling = nil
	return zc.Build()
}

func run(cfg Config) error {
	log, err := newLogger(cfg.LogLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	defer startGCFloor(cfg.Runtime.GCMinHeap, log.Named("gc"))()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("%w: data_dir %q: %v", errUsage, cfg.DataDir, err)
	}

	users := auth.NewStore()
	for _, u := range cfg.Users {
		if err := users.AddUser(u.Name, u.Password, u.Tags, u.LoopbackOnly); err != nil {
			return fmt.Errorf("%w: users: %v", errUsage, err)
		}
		if err := users.SetPermission(u.Name, "/", auth.Permission{Configure: ".*", Write: ".*", Read: ".*"}); err != nil {
			return fmt.Errorf("%w: users: %v", errUsage, err)
		}
	}

	// A single node is a cluster of one (DESIGN.md §5): the same host runs its groups.
	alarms := newAlarms()
	sopts := storage.DefaultOptions()
	sopts.MinFreeDiskBytes = cfg.Storage.DiskFreeLimit
	sopts.DiskCheckInterval = cfg.Storage.DiskCheckInterval
	sopts.Alarm = alarms.set
	eng, err := storage.Open(cfg.DataDir, sopts, log.Named("storage"))
	if err != nil {
		if errors.Is(err, storage.ErrLocked) || errors.Is(err, storage.ErrUnknownFormat) {
			return fmt.Errorf("%w: data_dir %q: %v", errUsage, cfg.DataDir, err)
		}
		return fmt.Errorf("open data dir: %w", err)
	}
	defer func() { _ = eng.Close() }()
	// With cluster.peers, cn is this node's cluster glue (cluster.go); without, nil.
	host, cn, err := newClusterHost(cfg, eng, log)
	if err != nil {
		return fmt.Errorf("cluster host: %w", err)
	}
	hostCtx, stopHost := context.WithCancel(context.Background())
	defer stopHost()
	if err := host.Start(hostCtx); err != nil {
		return fmt.Errorf("cluster host: %w", err)
	}
	defer host.Stop()
	defer func() {
		m := host.Metrics()
		log.Info("group commit", zap.Uint64("fsyncs", m.Fsyncs), zap.Uint64("entries", m.EntriesWritten),
			zap.Float64("entries_per_fsync", m.EntriesPerFsync), zap.Uint64("snapshots", m.Snapshots))
	}()
	if err := cn.start(hostCtx); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	defer cn.close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// A node removed from the cluster stops as if told to (its onRemoved logged why).
		select {
		case <-cn.Removed():
			stop()
		case <-ctx.Done():
		}
	}()
	if cfg.HTTP != "off" {
		// For now the HTTP listener serves the cluster status only (GET /api/cluster/status).
		ln, err := net.Listen("tcp", cfg.HTTP)
		if err != nil {
			return fmt.Errorf("listen http on %s: %w", cfg.HTTP, err)
		}
		defer ln.Close()
		log.Info("listening", zap.String("listener", "http"), zap.String("addr", ln.Addr().String()))
		go func() { _ = http.Serve(ln, statusHandler(cfg, host, cn)) }()
	}
	if err := cn.waitServing(ctx); err != nil {
		log.Info("shutting down")
		return nil
	}

	bcfg := broker.DefaultConfig()
	bcfg.Host = host
	bcfg.Spread = cn.spread()
	bcfg.PartitionGroups = cfg.Cluster.PartitionGroups
	core, err := broker.New(log.Named("broker"), bcfg)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	defer core.Close()

	acfg := amqp091.DefaultConfig()
	acfg.FrameMax = cfg.AMQP091.FrameMax
	acfg.ChannelMax = cfg.AMQP091.ChannelMax
	acfg.Heartbeat = cfg.AMQP091.Heartbeat
	acfg.MaxMessageSize = cfg.AMQP091.MaxMessageSize
	acfg.PublishFlowLimit = cfg.AMQP091.PublishFlowLimit
	acfg.Version = version
	amqpServer := amqp091.NewServer(acfg, core, users, log.Named("amqp"))
	defer amqpServer.Close()

	scfg := stomp.DefaultConfig()
	scfg.Limits = wire.Limits{
		MaxHeaderBytes: cfg.STOMPOptions.MaxHeaderBytes,
		MaxHeaders:     cfg.STOMPOptions.MaxHeaders,
		MaxBody:        cfg.STOMPOptions.MaxBody,
	}
	scfg.DefaultUser, scfg.DefaultPass = cfg.STOMPOptions.DefaultUser, cfg.STOMPOptions.DefaultPass
	scfg.PublishFlowLimit = cfg.STOMPOptions.PublishFlowLimit
	scfg.Version = version
	stompServer := stomp.NewServer(scfg, core, users, log.Named("stomp"))
	defer stompServer.Close()
	go alarms.run(log, func(reason string, blocked bool) {
		amqpServer.SetBlocked(reason, blocked)
		stompServer.SetBlocked(reason, blocked)
	})
	defer alarms.stop()

	mcfg := mqtt.DefaultConfig()
	mcfg.Exchange = cfg.MQTTOptions.Exchange
	mcfg.VHost = cfg.MQTTOptions.VHost
	mcfg.MaxPacketSize = cfg.MQTTOptions.MaxPacketSize
	mcfg.MaxInflight = cfg.MQTTOptions.MaxInflight
	mcfg.ReceiveMaximum = cfg.MQTTOptions.ReceiveMaximum
	mcfg.AllowAnonymous = &cfg.MQTTOptions.AllowAnonymous
	mcfg.MaxKeepAlive = uint16(cfg.MQTTOptions.MaxKeepAlive / time.Second)
	mcfg.MaxSessionExpiry = uint32(cfg.MQTTOptions.MaxSessionExpiry / time.Second)
	mcfg.PersistentSessionExpiry = uint32(cfg.MQTTOptions.PersistentSessionExpiry / time.Second)
	mcfg.NodeID = cfg.NodeID
	mcfg.PublishFlowLimit = cfg.MQTTOptions.PublishFlowLimit
	mqttServer := mqtt.NewServer(mcfg, core, users, log.Named("mqtt"))
	defer mqttServer.Close()

	var tlsConf *tls.Config
	if cfg.TLS.CertFile != "" || cfg.TLS.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return fmt.Errorf("%w: tls: %v", errUsage, err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	errc := make(chan error, 16)
	var listeners []net.Listener
	defer func() {
		for _, ln := range listeners {
			_ = ln.Close()
		}
	}()
	serve := func(name, addr string, useTLS bool, srv func(net.Listener) error) error {
		if addr == "off" {
			return nil
		}
		if useTLS && tlsConf == nil {
			log.Info("listener disabled: no tls.cert_file configured", zap.String("listener", name))
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s on %s: %w", name, addr, err)
		}
		if useTLS {
			ln = tls.NewListener(ln, tlsConf)
		}
		listeners = append(listeners, ln)
		log.Info("listening", zap.String("listener", name), zap.String("addr", ln.Addr().String()))
		go func() { errc <- srv(ln) }()
		return nil
	}
	// WebSocket: STOMP (one frame per text message) on ws_stomp, and every protocol we have by
	// subprotocol on ws; each listener is its own gateway so a client without a subprotocol
	// gets the listener's protocol (as RabbitMQ's Web-STOMP and Web-MQTT serve it).
	stompWS := func(c net.Conn) { _ = stompServer.ServeConn(c, true) }
	stompRoutes := []websocket.Route{
		{Subprotocol: "v12.stomp", Handler: stompWS},
		{Subprotocol: "v11.stomp", Handler: stompWS},
		{Subprotocol: "v10.stomp", Handler: stompWS},
	}
	wsCfg := websocket.Config{AllowedOrigins: cfg.WSAllowedOrigins}
	wsStomp := websocket.New(websocket.Config{AllowedOrigins: cfg.WSAllowedOrigins, Fallback: "v12.stomp"}, log.Named("ws-stomp"), stompRoutes...)
	defer wsStomp.Close()
	// MQTT over WebSocket: binary messages carrying the MQTT byte stream, subprotocol "mqtt"
	// (Web-MQTT on ws_mqtt; clients asking for no subprotocol get MQTT there).
	mqttRoute := websocket.Route{Subprotocol: "mqtt", Binary: true, Handler: func(c net.Conn) { _ = mqttServer.ServeConn(c) }}
	wsMQTT := websocket.New(websocket.Config{AllowedOrigins: cfg.WSAllowedOrigins, Fallback: "mqtt"}, log.Named("ws-mqtt"), mqttRoute)
	defer wsMQTT.Close()
	wsAll := websocket.New(wsCfg, log.Named("ws"), append(stompRoutes, mqttRoute)...)
	defer wsAll.Close()

	// AMQP last: its port accepting is what tells tests and scripts the node is up.
	for _, l := range []struct {
		name, addr string
		tls        bool
		srv        func(net.Listener) error
	}{
		{"mqtt", cfg.MQTT, false, mqttServer.Serve},
		{"mqtts", cfg.MQTTS, true, mqttServer.Serve},
		{"ws-stomp", cfg.WSStomp, cfg.WSTLS, wsStomp.Serve},
		{"ws-mqtt", cfg.WSMQTT, cfg.WSTLS, wsMQTT.Serve},
		{"ws", cfg.WS, cfg.WSTLS, wsAll.Serve},
		{"stomp", cfg.STOMP, false, stompServer.Serve},
		{"stomps", cfg.STOMPS, true, stompServer.Serve},
		{"amqp", cfg.AMQP, false, amqpServer.Serve},
		{"amqps", cfg.AMQPS, true, amqpServer.Serve},
	} {
		if err := serve(l.name, l.addr, l.tls, l.srv); err != nil {
			return err
		}
	}
	for _, l := range []struct{ name, addr string }{
		{"prometheus", cfg.Prometheus},
	} {
		if l.addr != "off" {
			log.Warn("listener not available in this version yet; not listening",
				zap.String("listener", l.name), zap.String("addr", l.addr))
		}
	}
	if cfg.Debug.PprofAddr != "off" {
		ln, err := startPprof(cfg.Debug.PprofAddr, log)
		if err != nil {
			return err
		}
		listeners = append(listeners, ln)
	}
	cn.Listening()
	log.Info("parley started", zap.String("version", version), zap.String("node_id", cfg.NodeID),
		zap.String("data_dir", cfg.DataDir))

	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case <-cn.Lost():
		if ctx.Err() != nil {
			// Told to stop as well (every node of a cluster stopped at once loses its peers):
			// stopping wins over coming back as a standby.
			log.Info("shutting down")
			return nil
		}
		return errReexec
	case err := <-errc:
		return fmt.Errorf("listener stopped: %w", err)
	}
}
