package meta

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strings"

	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
)

// ExchangeDef is an exchange as declared.
type ExchangeDef struct {
	VHost, Name, Type             string
	Durable, AutoDelete, Internal bool
	Args                          message.Table
}

// QueueDef is a queue as declared. In a declare, Owner is the declaring connection; the stored
// definition keeps it only for an exclusive queue (0 = none). Durable is false for an exclusive
// queue whatever the client asked (RabbitMQ: Durable = durable andalso not exclusive).
type QueueDef struct {
	VHost, Name                    string
	Durable, Exclusive, AutoDelete bool
	Owner                          uint64
	Args                           message.Table
	// ServerNamed marks a name the server generated (queue.declare with an empty name), which
	// the "amq." reserved-prefix rule does not apply to.
	ServerNamed bool
	// Group is the raft group holding a durable queue's log: its placement, recorded here in
	// the metadata (group 0) so a restart or another node finds it. DeclareQueue gives every
	// incarnation of a durable queue a group of its own (QueueGroupBase plus a counter that
	// only grows), so a queue deleted and declared again never shares a group with its
	// predecessor, whose log a replica that missed the delete may still hold. It is 0 for a
	// transient queue, and for a durable queue restored from metadata written before groups
	// were recorded (the broker derives that one's group from its vhost and name).
	//
	// For a queue packed into a partition group (Partition set), Group is not a raft group of
	// its own: it names the queue's incarnation inside the partition (every entry of its in
	// the partition's log carries it), so the same rule holds there.
	Group uint64
	// Partition is the partition group a small durable queue (an MQTT session, a durable STOMP
	// subscription) is packed into, with many others (DESIGN.md §5): its placement, recorded
	// in group 0 with the queue. 0: the queue has a group of its own (Group), which is what a
	// record written before partitions existed says.
	Partition uint64
	// Packed asks, in a declare, for a partition group rather than a group of its own; the
	// broker then picks Partition. It is not stored: Partition says where the queue went.
	Packed bool
	// Place is the node a spread durable queue's process prefers to run on (broker/remote.go,
	// issue 7: "placement lives in group 0"): chosen when the queue is declared and recorded
	// with it, so every node and every restart agree; its group's leadership follows it. 0:
	// no placement recorded (queues that are not spread, and those declared before it was).
	Place uint64
}

// PartitionGroupBase is the lowest partition group id: partition i is PartitionGroupBase+i.
// Partition groups live below QueueGroupBase, clear of group 0 and of the queues' own groups.
const PartitionGroupBase = 1 << 61

// IsPartitionGroup reports whether id is a partition group's.
func IsPartitionGroup(id uint64) bool { return id >= PartitionGroupBase && id < QueueGroupBase }

// QueueGroupBase is the lowest raft group id DeclareQueue hands out; ids below it are group 0
// (the metadata) and those a later placement scheme may use, and ids with the top bit set are
// the name-derived groups of queues declared before groups were recorded.
const QueueGroupBase = 1 << 62

// BindingDef is a binding from the exchange Source to a queue or an exchange.
type BindingDef struct {
	VHost, Source string
	Dest          exchange.Dest
	Key           string
	Args          message.Table
}

type vhost struct {
	s         *State // for touch (records.go)
	name      string
	exchanges map[string]ExchangeDef
	queues    map[string]QueueDef
	router    *exchange.Router
}

// State is the metadata of every vhost.
type State struct {
	vhosts map[string]*vhost
	// retained holds MQTT retained messages: vhost -> topic -> encoded message (retained.go).
	retained map[string]map[string][]byte
	// groupSeq numbers the durable queues' groups (QueueDef.Group); it never goes back.
	groupSeq uint64
	// touched are the records changed since the last TakeChanges (records.go), by key;
	// changeErr what touch could not encode.
	touched   map[string]recordRef
	changeErr error
}

// DefaultVHost is the vhost every broker starts with.
const DefaultVHost = "/"

// New returns the state of a fresh broker: vhost "/" with its predeclared exchanges. Its
// records count as changed: the first TakeChanges returns them.
func New() *State {
	s := &State{vhosts: map[string]*vhost{}}
	_ = s.AddVHost(DefaultVHost)
	return s
}

// predeclared are the exchanges RabbitMQ 3.x creates in every vhost (rabbit_vhost:do_add).
// All are durable; amq.rabbitmq.trace is internal (the firehose tracer publishes to it).
var predeclared = []ExchangeDef{
	{Name: "", Type: "direct", Durable: true},
	{Name: "amq.direct", Type: "direct", Durable: true},
	{Name: "amq.fanout", Type: "fanout", Durable: true},
	{Name: "amq.headers", Type: "headers", Durable: true},
	{Name: "amq.match", Type: "headers", Durable: true},
	{Name: "amq.rabbitmq.trace", Type: "topic", Durable: true, Internal: true},
	{Name: "amq.topic", Type: "topic", Durable: true},
}

// AddVHost creates a vhost with the predeclared exchanges.
func (s *State) AddVHost(name string) error {
	if _, ok := s.vhosts[name]; ok {
		return fmt.Errorf("add vhost %q: %w", name, ErrVHostExists)
	}
	v := &vhost{s: s, name: name, exchanges: map[string]ExchangeDef{}, queues: map[string]QueueDef{},
		router: exchange.NewRouter()}
	for _, d := range predeclared {
		d.VHost = name
		v.putExchange(d)
	}
	s.vhosts[name] = v
	s.touch(recordRef{kind: recVHost, vhost: name})
	return nil
}

// DeleteVHost removes a vhost and everything in it, its retained messages included.
func (s *State) DeleteVHost(name string) error {
	v, ok := s.vhosts[name]
	if !ok {
		return fmt.Errorf("delete vhost %q: %w", name, ErrNoVHost)
	}
	s.touch(recordRef{kind: recVHost, vhost: name})
	for _, x := range v.exchanges {
		if x.Durable {
			s.touch(recordRef{kind: recExchange, vhost: name, name: x.Name})
		}
	}
	for _, q := range v.queues {
		if q.Durable {
			s.touch(recordRef{kind: recQueue, vhost: name, name: q.Name})
		}
	}
	for _, b := range v.router.Bindings() {
		v.touchBinding(b)
	}
	for topic := range s.retained[name] {
		s.touch(recordRef{kind: recRetained, vhost: name, name: topic})
	}
	delete(s.retained, name)
	delete(s.vhosts, name)
	return nil
}

// HasVHost reports whether the vhost exists.
func (s *State) HasVHost(name string) bool {
	_, ok := s.vhosts[name]
	return ok
}

// VHosts lists the vhosts by name.
func (s *State) VHosts() []string {
	out := make([]string, 0, len(s.vhosts))
	for n := range s.vhosts {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Router is the vhost's current routing snapshot (an empty router for an unknown vhost).
func (s *State) Router(vhost string) *exchange.Router {
	v, ok := s.vhosts[vhost]
	if !ok {
		return exchange.NewRouter()
	}
	return v.router
}

func (s *State) vhost(name string) (*vhost, error) {
	v, ok := s.vhosts[name]
	if !ok {
		// RabbitMQ refuses connection.open to a missing vhost, so a channel never sees this;
		// a vhost deleted under a live connection closes it with this code.
		return nil, Errorf(NotAllowed, "vhost %s not found", name)
	}
	return v, nil
}

// stripCRLF is rabbit_channel:strip_cr_lf/1: RabbitMQ silently drops CR and LF from names.
func stripCRLF(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", "", "\n", "").Replace(s)
}

// ServerNamedQueue is the name RabbitMQ gives a queue declared with an empty name:
// rabbit_guid:binary(rabbit_guid:gen_secure(), "amq.gen") — "amq.gen-" and 16 random bytes in
// unpadded base64url. The caller supplies the randomness (this package is pure).
func ServerNamedQueue(random [16]byte) string {
	return "amq.gen-" + base64.RawURLEncoding.EncodeToString(random[:])
}

// serverNamedShape reports whether name looks like ServerNamedQueue's output.
func serverNamedShape(name string) bool {
	const prefix = "amq.gen-"
	return len(name) == len(prefix)+22 && strings.HasPrefix(name, prefix)
}

// Queue returns a queue's definition.
func (s *State) Queue(vhost, name string) (QueueDef, bool) {
	v, ok := s.vhosts[vhost]
	if !ok {
		return QueueDef{}, false
	}
	q, ok := v.queues[name]
	return q, ok
}

// Exchange returns an exchange's definition.
func (s *State) Exchange(vhost, name string) (ExchangeDef, bool) {
	v, ok := s.vhosts[vhost]
	if !ok {
		return ExchangeDef{}, false
	}
	x, ok := v.exchanges[name]
	return x, ok
}

// Queues lists a vhost's queues by name.
func (s *State) Queues(vhost string) []QueueDef {
	v, ok := s.vhosts[vhost]
	if !ok {
		return nil
	}
	out := make([]QueueDef, 0, len(v.queues))
	for _, q := range v.queues {
		out = append(out, q)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Exchanges lists a vhost's exchanges by name, the default exchange "" first.
func (s *State) Exchanges(vhost string) []ExchangeDef {
	v, ok := s.vhosts[vhost]
	if !ok {
		return nil
	}
	out := make([]ExchangeDef, 0, len(v.exchanges))
	for _, x := range v.exchanges {
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Bindings lists a vhost's bindings, ordered by source, destination and key. The default
// exchange's implicit bindings are not listed.
func (s *State) Bindings(vhost string) []BindingDef {
	v, ok := s.vhosts[vhost]
	if !ok {
		return nil
	}
	bs := v.router.Bindings()
	out := make([]BindingDef, len(bs))
	for i, b := range bs {
		out[i] = BindingDef{VHost: vhost, Source: b.Source, Dest: b.Dest, Key: b.Key, Args: b.Args}
	}
	return out
}
