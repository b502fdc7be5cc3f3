package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is every option of parley. configs/parley.yaml documents each one at its default;
// TestConfigFileMatchesDefaults keeps the two in step. Precedence: defaults, then the file
// (--config), then PARLEY_<OPTION> environment variables, then flags.
type Config struct {
	DataDir  string `yaml:"data_dir"`
	NodeID   string `yaml:"node_id"`
	LogLevel string `yaml:"log_level"`

	// Listeners: host:port, or "off". TLS listeners need tls.cert_file and tls.key_file.
	AMQP       string        `yaml:"amqp"`
	AMQPS      string        `yaml:"amqps"`
	MQTT       string        `yaml:"mqtt"`
	MQTTS      string        `yaml:"mqtts"`
	STOMP      string        `yaml:"stomp"`
	STOMPS     string        `yaml:"stomps"`
	HTTP       string        `yaml:"http"`
	WSStomp    string        `yaml:"ws_stomp"`
	WSMQTT     string        `yaml:"ws_mqtt"`
	WS         string        `yaml:"ws"`
	Prometheus string        `yaml:"prometheus"`
	Cluster    ClusterConfig `yaml:"cluster"`

	// WSAllowedOrigins are the browser Origins (host patterns) the WebSocket listeners accept
	// besides the request's own host.
	WSAllowedOrigins []string `yaml:"ws_allowed_origins"`
	// WSTLS serves the WebSocket listeners over TLS (wss://) with tls.cert_file.
	WSTLS bool `yaml:"ws_tls"`

	Storage      StorageConfig `yaml:"storage"`
	TLS          TLSConfig     `yaml:"tls"`
	AMQP091      AMQPConfig    `yaml:"amqp091"`
	STOMPOptions STOMPConfig   `yaml:"stomp_options"`
	MQTTOptions  MQTTConfig    `yaml:"mqtt_options"`
	Users        []UserConfig  `yaml:"users"`
	Runtime      RuntimeConfig `yaml:"runtime"`
	Debug        DebugConfig   `yaml:"debug"`
}

// RuntimeConfig tunes the Go runtime the broker runs in.
type RuntimeConfig struct {
	// GCMinHeap is the heap (bytes) below which the garbage collector does not start a cycle:
	// while the live heap is small, GOGC is raised so that the collector's goal is at least
	// this (gcfloor.go). 0 leaves the collector to GOGC alone; GOGC set in the environment
	// turns it off too.
	GCMinHeap uint64 `yaml:"gc_min_heap"`
}

// DebugConfig holds diagnostics that cost something and are off unless asked for.
type DebugConfig struct {
	// PprofAddr serves net/http/pprof (CPU, heap, allocs, goroutine, block and mutex
	// profiles) on this loopback host:port, or "off". Turning it on also samples blocking
	// and mutex contention, which costs some throughput.
	PprofAddr string `yaml:"pprof_addr"`
}

// MQTTConfig tunes the MQTT listeners (protocol/mqtt.Config documents each field).
type MQTTConfig struct {
	Exchange         string        `yaml:"exchange"`
	VHost            string        `yaml:"vhost"`
	MaxPacketSize    uint32        `yaml:"max_packet_size"`
	MaxInflight      uint16        `yaml:"max_inflight"`
	ReceiveMaximum   uint16        `yaml:"receive_maximum"`
	AllowAnonymous   bool          `yaml:"allow_anonymous"`
	MaxKeepAlive     time.Duration `yaml:"max_keep_alive"`
	MaxSessionExpiry time.Duration `yaml:"max_session_expiry"`
	// PersistentSessionExpiry: see protocol/mqtt.Config.PersistentSessionExpiry; 0s = never.
	PersistentSessionExpiry time.Duration `yaml:"persistent_session_expiry"`
	// PublishFlowLimit: see protocol/mqtt.Config.PublishFlowLimit; 0 = its default, negative
	// = off.
	PublishFlowLimit int `yaml:"publish_flow_limit"`
}

// ClusterConfig places the node in a cluster (see cluster.go in this directory).
type ClusterConfig struct {
	// Listen is the address peers connect to (flag --cluster).
	Listen string `yaml:"listen"`
	// Peers lists the cluster's nodes as ID=host:port,ID=host:port (flag --peers); empty runs a
	// single node. A list that does not name this node makes it a joining node (membership.go).
	Peers string `yaml:"peers"`
	// SpreadQueues (on by default; issue 7) runs each durable queue's process on
	// the node it is placed on (recorded in its metadata), which leads its group, the groups'
	// leaders spread over the nodes; the serving node forwards the queue's operations there,
	// relays its deliveries back (broker/remote.go) and moves queues back to their placement
	// when their node returns (broker/rebalance.go). Off: the serving node runs every queue.
	SpreadQueues bool `yaml:"spread_queues"`
	// PartitionGroups is how many raft groups the small durable queues (MQTT persistent
	// sessions, durable STOMP topic subscriptions) are packed into (broker/partition.go); 0
	// gives each its own group. A single node uses it too.
	PartitionGroups int `yaml:"partition_groups"`
}

// StorageConfig tunes the data directory.
type StorageConfig struct {
	// DiskFreeLimit is the free space (bytes) below which publishers are blocked.
	DiskFreeLimit uint64 `yaml:"disk_free_limit"`
	// DiskCheckInterval is how often free space is checked.
	DiskCheckInterval time.Duration `yaml:"disk_check_interval"`
}

// TLSConfig names the certificate for the TLS listeners.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
}

// AMQPConfig tunes the AMQP 0-9-1 listener.
type AMQPConfig struct {
	FrameMax       uint32        `yaml:"frame_max"`
	ChannelMax     uint16        `yaml:"channel_max"`
	Heartbeat      time.Duration `yaml:"heartbeat"`
	MaxMessageSize uint64        `yaml:"max_message_size"`
	// PublishFlowLimit: see protocol/amqp091.Config.PublishFlowLimit; 0 = its default,
	// negative = off.
	PublishFlowLimit int `yaml:"publish_flow_limit"`
}

// STOMPConfig tunes the STOMP listeners (TCP, TLS and WebSocket).
type STOMPConfig struct {
	MaxHeaderBytes int    `yaml:"max_header_bytes"`
	MaxHeaders     int    `yaml:"max_headers"`
	MaxBody        int    `yaml:"max_body"`
	DefaultUser    string `yaml:"default_user"`
	DefaultPass    string `yaml:"default_pass"`
	// PublishFlowLimit: see protocol/stomp.Config.PublishFlowLimit; 0 = its default,
	// negative = off.
	PublishFlowLimit int `yaml:"publish_flow_limit"`
}

// UserConfig declares a user. With no users configured, parley has guest/guest, which may
// connect only from loopback (as RabbitMQ).
type UserConfig struct {
	Name         string   `yaml:"name"`
	Password     string   `yaml:"password"`
	Tags         []string `yaml:"tags"`
	LoopbackOnly bool     `yaml:"loopback_only"`
}

// DefaultConfig is what parley runs with when given nothing.
func DefaultConfig() Config {
	return Config{
		DataDir:    "./data",
		NodeID:     "parley-1",
		LogLevel:   "info",
		AMQP:       ":5672",
		AMQPS:      ":5671",
		MQTT:       ":1883",
		MQTTS:      ":8883",
		STOMP:      ":61613",
		STOMPS:     ":61614",
		HTTP:       ":15672",
		WSStomp:    ":15674",
		WSMQTT:     ":15675",
		WS:         "off",
		Prometheus: ":15692",
		Cluster:    ClusterConfig{Listen: ":25672", Peers: "", PartitionGroups: 16, SpreadQueues: true},

		WSAllowedOrigins: []string{},
		Storage:          StorageConfig{DiskFreeLimit: 50_000_000, DiskCheckInterval: 5 * time.Second},
		AMQP091: AMQPConfig{
			FrameMax:         131072,
			ChannelMax:       2047,
			Heartbeat:        60 * time.Second,
			MaxMessageSize:   128 << 20,
			PublishFlowLimit: 8192,
		},
		STOMPOptions: STOMPConfig{
			MaxHeaderBytes:   102400,
			MaxHeaders:       1000,
			MaxBody:          128 << 20,
			DefaultUser:      "guest",
			DefaultPass:      "guest",
			PublishFlowLimit: 8192,
		},
		MQTTOptions: MQTTConfig{
			Exchange:         "amq.topic",
			VHost:            "/",
			MaxPacketSize:    16 << 20,
			MaxInflight:      1024,
			ReceiveMaximum:   1024,
			AllowAnonymous:   true,
			PublishFlowLimit: 2048,
		},
		Users:   []UserConfig{{Name: "guest", Password: "guest", Tags: []string{"administrator"}, LoopbackOnly: true}},
		Runtime: RuntimeConfig{GCMinHeap: 64 << 20},
		Debug:   DebugConfig{PprofAddr: "off"},
	}
}

// maxPartitionGroups bounds cluster.partition_groups: the point is a few groups for many queues.
const maxPartitionGroups = 1024

// errUsage marks a configuration error: exit code 2 with a one-line message.
var errUsage = errors.New("bad configuration")

// listenerFlags maps flag names to the Config fields they set; env names derive from them.
var listenerFlags = []struct {
	flag string
	get  func(*Config) *string
}{
	{"data-dir", func(c *Config) *string { return &c.DataDir }},
	{"node-id", func(c *Config) *string { return &c.NodeID }},
	{"log-level", func(c *Config) *string { return &c.LogLevel }},
	{"amqp", func(c *Config) *string { return &c.AMQP }},
	{"amqps", func(c *Config) *string { return &c.AMQPS }},
	{"mqtt", func(c *Config) *string { return &c.MQTT }},
	{"mqtts", func(c *Config) *string { return &c.MQTTS }},
	{"stomp", func(c *Config) *string { return &c.STOMP }},
	{"stomps", func(c *Config) *string { return &c.STOMPS }},
	{"http", func(c *Config) *string { return &c.HTTP }},
	{"ws-stomp", func(c *Config) *string { return &c.WSStomp }},
	{"ws-mqtt", func(c *Config) *string { return &c.WSMQTT }},
	{"ws", func(c *Config) *string { return &c.WS }},
	{"prometheus", func(c *Config) *string { return &c.Prometheus }},
	{"cluster", func(c *Config) *string { return &c.Cluster.Listen }},
	{"peers", func(c *Config) *string { return &c.Cluster.Peers }},
	{"pprof", func(c *Config) *string { return &c.Debug.PprofAddr }},
}

// envName is the environment variable for a flag: data-dir -> PARLEY_DATA_DIR.
func envName(flagName string) string {
	return "PARLEY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// LoadConfig applies defaults, file, environment and flags, in that order, and validates.
func LoadConfig(args []string, env func(string) (string, bool)) (Config, error) {
	fs := flag.NewFlagSet("parley", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	configFile := fs.String("config", "", "configuration file (YAML); see configs/parley.yaml")
	values := make([]*string, len(listenerFlags))
	def := DefaultConfig()
	for i, f := range listenerFlags {
		values[i] = fs.String(f.flag, *f.get(&def), "see configs/parley.yaml ("+envName(f.flag)+")")
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	cfg := DefaultConfig()
	if *configFile == "" {
		if v, ok := env("PARLEY_CONFIG"); ok {
			*configFile = v
		}
	}
	if *configFile != "" {
		data, err := os.ReadFile(*configFile)
		if err != nil {
			return Config{}, fmt.Errorf("%w: --config: %v", errUsage, err)
		}
		// Users given in the file replace the default guest rather than adding to it.
		fileCfg := cfg
		fileCfg.Users = nil
		dec := yaml.NewDecoder(strings.NewReader(string(data)))
		dec.KnownFields(true)
		if err := dec.Decode(&fileCfg); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("%w: %s: %v", errUsage, *configFile, err)
		}
		if fileCfg.Users == nil {
			fileCfg.Users = cfg.Users
		}
		cfg = fileCfg
	}
	for _, f := range listenerFlags {
		if v, ok := env(envName(f.flag)); ok {
			*f.get(&cfg) = v
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for i, f := range listenerFlags {
		if set[f.flag] {
			*f.get(&cfg) = *values[i]
		}
	}
	return cfg, cfg.validate()
}

func (c *Config) validate() error {
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("%w: log_level %q: want debug, info, warn or error", errUsage, c.LogLevel)
	}
	for _, f := range listenerFlags[3:15] {
		addr := *f.get(c)
		if addr == "off" {
			continue
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%w: %s %q: want host:port or off", errUsage, f.flag, addr)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%w: %s %q: bad port", errUsage, f.flag, addr)
		}
	}
	if err := validatePprofAddr(c.Debug.PprofAddr); err != nil {
		return err
	}
	if c.DataDir == "" {
		return fmt.Errorf("%w: data_dir is empty", errUsage)
	}
	if c.Cluster.PartitionGroups < 0 || c.Cluster.PartitionGroups > maxPartitionGroups {
		return fmt.Errorf("%w: cluster.partition_groups %d: want 0 to %d", errUsage, c.Cluster.PartitionGroups, maxPartitionGroups)
	}
	if c.Storage.DiskCheckInterval <= 0 {
		return fmt.Errorf("%w: storage.disk_check_interval %s: must be positive", errUsage, c.Storage.DiskCheckInterval)
	}
	if c.AMQP091.FrameMax != 0 && c.AMQP091.FrameMax < 4096 {
		return fmt.Errorf("%w: amqp091.frame_max %d: below the AMQP minimum of 4096", errUsage, c.AMQP091.FrameMax)
	}
	if c.STOMPOptions.MaxHeaderBytes <= 0 || c.STOMPOptions.MaxHeaders <= 0 || c.STOMPOptions.MaxBody <= 0 {
		return fmt.Errorf("%w: stomp_options: max_header_bytes, max_headers and max_body must be positive", errUsage)
	}
	if c.MQTTOptions.Exchange == "" {
		return fmt.Errorf("%w: mqtt_options.exchange is empty", errUsage)
	}
	if c.MQTTOptions.MaxPacketSize == 0 {
		return fmt.Errorf("%w: mqtt_options.max_packet_size 0: must be positive (MQTT packets are never unbounded)", errUsage)
	}
	if c.MQTTOptions.MaxPacketSize > 268435455+5 {
		return fmt.Errorf("%w: mqtt_options.max_packet_size %d: above MQTT's largest packet (256 MiB)", errUsage, c.MQTTOptions.MaxPacketSize)
	}
	if c.MQTTOptions.MaxInflight == 0 || c.MQTTOptions.ReceiveMaximum == 0 {
		return fmt.Errorf("%w: mqtt_options.max_inflight and receive_maximum must be positive", errUsage)
	}
	if c.MQTTOptions.MaxKeepAlive < 0 || c.MQTTOptions.MaxKeepAlive > 65535*time.Second {
		return fmt.Errorf("%w: mqtt_options.max_keep_alive %s: want 0s to 65535s", errUsage, c.MQTTOptions.MaxKeepAlive)
	}
	if c.MQTTOptions.MaxSessionExpiry < 0 || c.MQTTOptions.MaxSessionExpiry > 4294967295*time.Second {
		return fmt.Errorf("%w: mqtt_options.max_session_expiry %s: out of range", errUsage, c.MQTTOptions.MaxSessionExpiry)
	}
	if e := c.MQTTOptions.PersistentSessionExpiry; e < 0 || e > 4294967295*time.Second || (e > 0 && e < time.Second) {
		return fmt.Errorf("%w: mqtt_options.persistent_session_expiry %s: want 0s (never) or 1s to 4294967295s", errUsage, e)
	}
	for _, u := range c.Users {
		if u.Name == "" {
			return fmt.Errorf("%w: users: a user without a name", errUsage)
		}
	}
	return nil
}

// validatePprofAddr accepts "off" or a loopback host:port: profiles show the broker's
// internals and the endpoint has no authentication, so it is never exposed beyond the host.
func validatePprofAddr(addr string) error {
	if addr == "off" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: debug.pprof_addr %q: want a loopback host:port or off", errUsage, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%w: debug.pprof_addr %q: bad port", errUsage, addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%w: debug.pprof_addr %q: only a loopback address (127.0.0.1, ::1, localhost) is allowed", errUsage, addr)
	}
	return nil
}
