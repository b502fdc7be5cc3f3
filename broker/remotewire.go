package broker

// The bodies of the RPC methods by which a node's proxy of a durable queue (remote.go) drives the
// queue's process on the node that leads its group (queuehost.go). Every body starts with the
// queue's group (uvarint), which names the queue cluster-wide. Decoding is bounds-checked
// (message.BinaryReader): a corrupt body from a peer is an error for that call only.

import (
	"encoding/binary"
	"fmt"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
	"github.com/parleymq/parley/broker/queue"
)

// RPC methods (cluster.RPC): proxy to host.
const (
	rpcHost    = "q.host"    // call: def, voters -> host runs the queue (adopts and leads its group)
	rpcAttach  = "q.attach"  // call: epoch -> a new session of the calling node for the queue
	rpcPublish = "q.publish" // call: message -> ok byte, ready uvarint (after the commit)
	rpcConsume = "q.consume" // call: epoch, local id, options -> status, host consumer id
	rpcCancel  = "q.cancel"  // call: epoch, host consumer id
	rpcSettle  = "q.settle"  // notify: epoch, outcome, host delivery ids
	rpcGet     = "q.get"     // call: epoch, noAck -> ok, remaining, delivery
	rpcPurge   = "q.purge"   // call -> n
	rpcDelete  = "q.delete"  // call -> n
	rpcStat    = "q.stat"    // call -> ready
	rpcCredit  = "q.credit"  // notify: epoch, host consumer id, n
	rpcDetach  = "q.detach"  // notify: epoch (the proxy stops)
)

// RPC methods: host to proxy.
const (
	rpcRelay = "q.relay" // notify: epoch, items (deliveries, cancellations)
	rpcLost  = "q.lost"  // notify: epoch: the host no longer runs the queue
	// notify: messages (exchange, routing key, message), dead-lettered by the queue, to route
	rpcDead    = "q.dead"
	rpcExpired = "q.expired" // notify: the queue went unused for its x-expires
)

// Relay item kinds.
const (
	relayDeliver   byte = 1 // local consumer id, delivery id, redelivered, expiry, message
	relayCancelled byte = 2 // local consumer id: the queue was deleted
)

type wbuf struct{ b []byte }

func (w *wbuf) uint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *wbuf) int(v int64)   { w.b = binary.AppendVarint(w.b, v) }
func (w *wbuf) str(s string)  { w.uint(uint64(len(s))); w.b = append(w.b, s...) }
func (w *wbuf) bool(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}

// msg appends m's binary encoding (the queue log's, message.AppendBinary).
func (w *wbuf) msg(m *message.Message) error {
	var err error
	w.b, err = message.AppendBinary(w.b, m)
	if err != nil {
		return fmt.Errorf("encode message for a remote queue: %w", err)
	}
	return nil
}

func newReader(b []byte) *message.BinaryReader { return message.NewBinaryReader(b) }

func readBool(r *message.BinaryReader) bool { return r.U8() != 0 }

// readMsg decodes a message; its body is a copy (the RPC body is reused by nothing, but a
// message outlives the call).
func readMsg(r *message.BinaryReader) *message.Message {
	m := r.Message()
	if m != nil && r.Err() == nil {
		m.Body = append([]byte(nil), m.Body...)
	}
	return m
}

// encodeHost encodes rpcHost's body: what the host needs of a queue's declaration, and the
// voters a new group starts with (those the serving node bootstrapped its copy with, see
// cluster.Host.AddReplicaWith; none when the group exists already). The arguments travel as
// the headers of an empty message: the message encoding keeps their AMQP field types exactly.
func encodeHost(def meta.QueueDef, voters []uint64) ([]byte, error) {
	w := wbuf{}
	w.uint(queueGroup(def))
	w.str(def.VHost)
	w.str(def.Name)
	w.bool(def.AutoDelete)
	err := w.msg(&message.Message{Properties: message.Properties{Flags: message.FlagHeaders, Headers: def.Args}})
	w.uint(uint64(len(voters)))
	for _, v := range voters {
		w.uint(v)
	}
	return w.b, err
}

func decodeHost(b []byte) (meta.QueueDef, []uint64, error) {
	r := newReader(b)
	def := meta.QueueDef{Durable: true}
	def.Group = r.Uint()
	def.VHost = r.Str()
	def.Name = r.Str()
	def.AutoDelete = readBool(r)
	m := r.Message()
	n := r.Count()
	var voters []uint64
	for range n {
		voters = append(voters, r.Uint())
	}
	if err := r.Err(); err != nil {
		return def, nil, fmt.Errorf("queue declaration from a peer: %w", err)
	}
	def.Args = m.Properties.Headers
	return def, voters, nil
}

// Status of a reply that may carry a broker error (consume).
const (
	statusOK  byte = 0
	statusErr byte = 1
)

func encodeErr(w *wbuf, err error) {
	w.b = append(w.b, statusErr)
	code, text := uint16(meta.InternalError), err.Error()
	if me, ok := err.(*meta.Error); ok {
		code, text = me.Code, me.Text
	}
	w.uint(uint64(code))
	w.str(text)
}

func decodeErr(r *message.BinaryReader) error {
	code := r.Uint()
	text := r.Str()
	if r.Err() != nil {
		return meta.Errorf(meta.InternalError, "bad reply from the queue's node: %v", r.Err())
	}
	return meta.Errorf(uint16(code), "%s", text)
}

// appendDelivery appends a relay item of a delivery.
func appendDelivery(w *wbuf, local uint64, d queue.Delivery) error {
	w.b = append(w.b, relayDeliver)
	w.uint(local)
	w.uint(uint64(d.ID))
	w.bool(d.Redelivered)
	w.int(d.Expiry)
	return w.msg(d.Msg)
}

// decodeRelay calls each for every item of a relay batch (rpcRelay's body), in order: a
// delivery's id is tagged with epoch (see remote.go). It stops at the first malformed item.
func decodeRelay(body []byte, epoch uint64, each func(kind byte, local queue.ConsumerID, d queue.Delivery)) error {
	r := newReader(body)
	r.Uint() // group
	r.Uint() // epoch
	for r.Len() > 0 && r.Err() == nil {
		kind := r.U8()
		local := queue.ConsumerID(r.Uint())
		switch kind {
		case relayDeliver:
			d := queue.Delivery{Consumer: local}
			d.ID = queue.DeliveryID(epoch<<epochShift | r.Uint()&hostIDMask)
			d.Redelivered = readBool(r)
			d.Expiry = r.Int()
			d.Msg = readMsg(r)
			if r.Err() == nil {
				each(kind, local, d)
			}
		case relayCancelled:
			if r.Err() == nil {
				each(kind, local, queue.Delivery{})
			}
		default:
			return fmt.Errorf("relay item of kind %d", kind)
		}
	}
	if err := r.Err(); err != nil {
		return fmt.Errorf("relay batch: %w", err)
	}
	return nil
}
