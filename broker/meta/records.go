package meta

// Records: the durable metadata as a set of keyed records, and changes to that set (DESIGN.md
// §4–5: group 0 replicates commands, not the whole metadata per change).
//
// Each durable thing is one record: a vhost, a durable exchange, a durable queue (with its
// placement, QueueDef.Group), a binding whose two ends are durable, an MQTT retained message,
// and the counter of queue groups handed out. A record's key names the thing (its first byte is
// the kind, then length-prefixed fields); its value holds the rest. A binding has everything in
// its key (source, destination, routing key and arguments are its identity) and an empty value.
//
// State remembers which records each change touched (touch, called where the state changes);
// TakeChanges turns them into puts of the records as they now are, or deletes for those that
// are gone, and forgets them. Applying every TakeChanges, in order, to an empty RecordSet gives
// State.Records(): that is what the tests check. A change that touches nothing durable (a
// transient queue, its bindings, an equivalent redeclare) yields no change at all, so the
// broker writes nothing for it.
//
// Encoding (entries of group 0 and its snapshots alike): a version byte (recordsVersion), a
// uvarint count, then per change an op byte (opPut, opDelete), the uvarint-prefixed key and,
// for a put, the uvarint-prefixed value. A snapshot is the puts of every record, in key order.
// Exchange and queue values are JSON with tagged field-table values (snapshot.go). Before
// records, group 0's entries and snapshots were the whole metadata as one JSON document (it
// starts with '{', never a version byte): DecodeRecordSet and RecordSet.ApplyEntry still read
// those, as a replacement of every record.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/parleymq/parley/broker/exchange"
)

// ErrCorruptRecords reports an entry or snapshot of records that does not decode.
var ErrCorruptRecords = errors.New("corrupt metadata records")

// recordsVersion is the first byte of every encoded set of record changes.
const recordsVersion byte = 1

// Change ops.
const (
	opDelete byte = 0
	opPut    byte = 1
)

// Record kinds, the first byte of a key. A State is rebuilt in key order, so a vhost's record
// comes before its exchanges and queues, and those before the bindings between them.
const (
	recGroupSeq byte = 1 // no fields; value: uvarint
	recVHost    byte = 2 // vhost; value empty
	recExchange byte = 3 // vhost, name; value: recExchangeValue JSON
	recQueue    byte = 4 // vhost, name; value: recQueueValue JSON
	recBinding  byte = 5 // vhost, source, "e" or "q", destination, routing key, arguments JSON; value empty
	recRetained byte = 6 // vhost, topic; value: the encoded message
)

// Change is a record put (Delete false: Key now holds Value) or deleted.
type Change struct {
	Key    string
	Value  []byte
	Delete bool
}

type recExchangeValue struct {
	Type       string               `json:"type"`
	AutoDelete bool                 `json:"auto_delete,omitempty"`
	Internal   bool                 `json:"internal,omitempty"`
	Args       map[string]snapValue `json:"args,omitempty"`
}

type recQueueValue struct {
	AutoDelete bool                 `json:"auto_delete,omitempty"`
	Args       map[string]snapValue `json:"args,omitempty"`
	Group      uint64               `json:"group,omitempty"`
	// Partition: QueueDef.Partition (absent: the queue has its own group).
	Partition uint64 `json:"partition,omitempty"`
	Place     uint64 `json:"place,omitempty"`
}

// recordRef names a record in a State: what touch remembers, to read the record later.
type recordRef struct {
	kind    byte
	vhost   string
	name    string           // exchange, queue or topic
	binding exchange.Binding // recBinding
}

func appendField(b []byte, f string) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

func destKind(d exchange.Dest) string {
	if d.Exchange {
		return "e"
	}
	return "q"
}

// key encodes the record's key.
func (r recordRef) key() (string, error) {
	b := []byte{r.kind}
	switch r.kind {
	case recGroupSeq:
	case recVHost:
		b = appendField(b, r.vhost)
	case recExchange, recQueue, recRetained:
		b = appendField(appendField(b, r.vhost), r.name)
	case recBinding:
		var args []byte
		if len(r.binding.Args) > 0 {
			t, err := encodeTable(r.binding.Args)
			if err != nil {
				return "", fmt.Errorf("binding from %q: %w", r.binding.Source, err)
			}
			if args, err = json.Marshal(t); err != nil { // map keys sorted: one encoding per table
				return "", fmt.Errorf("binding from %q: %w", r.binding.Source, err)
			}
		}
		for _, f := range []string{r.vhost, r.binding.Source, destKind(r.binding.Dest), r.binding.Dest.Name, r.binding.Key} {
			b = appendField(b, f)
		}
		b = appendField(b, string(args))
	default:
		return "", fmt.Errorf("%w: record kind %d", ErrCorruptRecords, r.kind)
	}
	return string(b), nil
}

// parseKey is key's inverse.
func parseKey(key string) (recordRef, error) {
	if key == "" {
		return recordRef{}, fmt.Errorf("%w: empty key", ErrCorruptRecords)
	}
	r := recordRef{kind: key[0]}
	rest := []byte(key[1:])
	var fields []string
	for len(rest) > 0 {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return recordRef{}, fmt.Errorf("%w: key field", ErrCorruptRecords)
		}
		fields = append(fields, string(rest[w:w+int(n)]))
		rest = rest[w+int(n):]
	}
	want := map[byte]int{recGroupSeq: 0, recVHost: 1, recExchange: 2, recQueue: 2, recRetained: 2, recBinding: 6}
	n, ok := want[r.kind]
	if !ok || len(fields) != n {
		return recordRef{}, fmt.Errorf("%w: key of kind %d with %d fields", ErrCorruptRecords, r.kind, len(fields))
	}
	switch r.kind {
	case recVHost:
		r.vhost = fields[0]
	case recExchange, recQueue, recRetained:
		r.vhost, r.name = fields[0], fields[1]
	case recBinding:
		r.vhost = fields[0]
		if fields[2] != "e" && fields[2] != "q" {
			return recordRef{}, fmt.Errorf("%w: binding destination kind %q", ErrCorruptRecords, fields[2])
		}
		r.binding = exchange.Binding{Source: fields[1], Dest: exchange.Dest{Name: fields[3], Exchange: fields[2] == "e"}, Key: fields[4]}
		if fields[5] != "" {
			var m map[string]snapValue
			if err := json.Unmarshal([]byte(fields[5]), &m); err != nil {
				return recordRef{}, fmt.Errorf("%w: binding arguments: %v", ErrCorruptRecords, err)
			}
			args, err := decodeTable(m)
			if err != nil {
				return recordRef{}, fmt.Errorf("%w: binding arguments: %v", ErrCorruptRecords, err)
			}
			r.binding.Args = args
		}
	}
	return r, nil
}

// touch notes that a change may have altered the record: TakeChanges will read it.
func (s *State) touch(r recordRef) {
	k, err := r.key()
	if err != nil {
		s.changeErr = errors.Join(s.changeErr, err)
		return
	}
	if s.touched == nil {
		s.touched = map[string]recordRef{}
	}
	s.touched[k] = r
}

// touchBinding touches b if it is durable (both ends are): call before the change that removes
// an end, after the one that adds the binding.
func (v *vhost) touchBinding(b exchange.Binding) {
	if v.bindingDurable(b) {
		v.s.touch(recordRef{kind: recBinding, vhost: v.name, binding: b})
	}
}

// bindingDurable reports whether a binding survives a restart: RabbitMQ keeps a binding
// durable only when its source and destination both are.
func (v *vhost) bindingDurable(b exchange.Binding) bool {
	if x, ok := v.exchanges[b.Source]; !ok || !x.Durable {
		return false
	}
	if b.Dest.Exchange {
		x, ok := v.exchanges[b.Dest.Name]
		return ok && x.Durable
	}
	q, ok := v.queues[b.Dest.Name]
	return ok && q.Durable
}

// record reads a record as the state holds it now; ok is false when it is not there (or not
// durable).
func (s *State) record(r recordRef) (value []byte, ok bool, err error) {
	if r.kind == recGroupSeq {
		return binary.AppendUvarint(nil, s.groupSeq), s.groupSeq != 0, nil
	}
	if r.kind == recRetained {
		m, ok := s.retained[r.vhost][r.name]
		return m, ok, nil
	}
	v, ok := s.vhosts[r.vhost]
	if !ok {
		return nil, false, nil
	}
	switch r.kind {
	case recVHost:
		return []byte{}, true, nil
	case recExchange:
		x, ok := v.exchanges[r.name]
		if !ok || !x.Durable {
			return nil, false, nil
		}
		args, err := encodeTable(x.Args)
		if err != nil {
			return nil, false, fmt.Errorf("exchange %q: %w", x.Name, err)
		}
		val, err := json.Marshal(recExchangeValue{Type: x.Type, AutoDelete: x.AutoDelete, Internal: x.Internal, Args: args})
		return val, err == nil, err
	case recQueue:
		q, ok := v.queues[r.name]
		if !ok || !q.Durable {
			return nil, false, nil
		}
		args, err := encodeTable(q.Args)
		if err != nil {
			return nil, false, fmt.Errorf("queue %q: %w", q.Name, err)
		}
		val, err := json.Marshal(recQueueValue{AutoDelete: q.AutoDelete, Args: args, Group: q.Group, Partition: q.Partition, Place: q.Place})
		return val, err == nil, err
	case recBinding:
		if !v.router.HasBinding(r.binding) || !v.bindingDurable(r.binding) {
			return nil, false, nil
		}
		return []byte{}, true, nil
	}
	return nil, false, fmt.Errorf("%w: record kind %d", ErrCorruptRecords, r.kind)
}

// TakeChanges returns the record changes made since the last call (or since New or the
// restore), in key order, and forgets them. A record that cannot be encoded (a field-table
// value the encoding does not support) is left out and reported in err; the other changes are
// returned all the same.
func (s *State) TakeChanges() ([]Change, error) {
	err := s.changeErr
	s.changeErr = nil
	keys := slices.Sorted(maps.Keys(s.touched))
	out := make([]Change, 0, len(keys))
	for _, k := range keys {
		val, ok, rerr := s.record(s.touched[k])
		switch {
		case rerr != nil:
			err = errors.Join(err, rerr)
		case ok:
			out = append(out, Change{Key: k, Value: val})
		default:
			out = append(out, Change{Key: k, Delete: true})
		}
	}
	clear(s.touched)
	return out, err
}

// Untake gives back changes TakeChanges returned that could not be stored, so the next
// TakeChanges includes them again (with the records as they are then).
func (s *State) Untake(cs []Change) {
	for _, c := range cs {
		r, err := parseKey(c.Key)
		if err != nil {
			continue // TakeChanges made it: it parses
		}
		s.touch(r)
	}
}

// Records returns every durable record of the state.
func (s *State) Records() (*RecordSet, error) {
	rs := NewRecordSet()
	put := func(r recordRef) error {
		k, err := r.key()
		if err != nil {
			return err
		}
		val, ok, err := s.record(r)
		if err != nil {
			return err
		}
		if ok {
			rs.put(k, val)
		}
		return nil
	}
	if err := put(recordRef{kind: recGroupSeq}); err != nil {
		return nil, err
	}
	for _, name := range s.VHosts() {
		v := s.vhosts[name]
		refs := []recordRef{{kind: recVHost, vhost: name}}
		for x := range v.exchanges {
			refs = append(refs, recordRef{kind: recExchange, vhost: name, name: x})
		}
		for q := range v.queues {
			refs = append(refs, recordRef{kind: recQueue, vhost: name, name: q})
		}
		for _, b := range v.router.Bindings() {
			refs = append(refs, recordRef{kind: recBinding, vhost: name, binding: b})
		}
		for _, r := range refs {
			if err := put(r); err != nil {
				return nil, err
			}
		}
	}
	for vh, m := range s.retained {
		for topic := range m {
			if err := put(recordRef{kind: recRetained, vhost: vh, name: topic}); err != nil {
				return nil, err
			}
		}
	}
	return rs, nil
}

// Snapshot encodes every durable record (RecordSet.Encode of Records).
func (s *State) Snapshot() ([]byte, error) {
	rs, err := s.Records()
	if err != nil {
		return nil, fmt.Errorf("snapshot metadata: %w", err)
	}
	return rs.Encode(), nil
}

// Restore rebuilds a State from Snapshot's output, or from the whole-metadata JSON written
// before records.
func Restore(data []byte) (*State, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: no snapshot", ErrCorruptRecords)
	}
	rs, err := DecodeRecordSet(data)
	if err != nil {
		return nil, err
	}
	return rs.State()
}

// EncodeChanges encodes record changes as one entry of group 0.
func EncodeChanges(cs []Change) []byte {
	n := 1 + binary.MaxVarintLen64
	for _, c := range cs {
		n += 1 + 2*binary.MaxVarintLen64 + len(c.Key) + len(c.Value)
	}
	b := make([]byte, 0, n)
	b = append(b, recordsVersion)
	b = binary.AppendUvarint(b, uint64(len(cs)))
	for _, c := range cs {
		if c.Delete {
			b = append(b, opDelete)
			b = appendField(b, c.Key)
			continue
		}
		b = append(b, opPut)
		b = appendField(b, c.Key)
		b = binary.AppendUvarint(b, uint64(len(c.Value)))
		b = append(b, c.Value...)
	}
	return b
}

// DecodeChanges decodes EncodeChanges's output. Values point into data.
func DecodeChanges(data []byte) ([]Change, error) {
	if len(data) == 0 || data[0] != recordsVersion {
		return nil, fmt.Errorf("%w: not a version %d record entry", ErrCorruptRecords, recordsVersion)
	}
	p := data[1:]
	uvarint := func() (uint64, bool) {
		v, w := binary.Uvarint(p)
		if w <= 0 {
			return 0, false
		}
		p = p[w:]
		return v, true
	}
	bytesField := func() ([]byte, bool) {
		n, ok := uvarint()
		if !ok || n > uint64(len(p)) {
			return nil, false
		}
		f := p[:n:n]
		p = p[n:]
		return f, true
	}
	count, ok := uvarint()
	// Each change takes at least 2 bytes: a count larger than that is corrupt (and must not
	// size an allocation).
	if !ok || count > uint64(len(p))/2 {
		return nil, fmt.Errorf("%w: change count", ErrCorruptRecords)
	}
	out := make([]Change, 0, count)
	for i := uint64(0); i < count; i++ {
		if len(p) == 0 {
			return nil, fmt.Errorf("%w: change %d truncated", ErrCorruptRecords, i)
		}
		op := p[0]
		p = p[1:]
		key, ok := bytesField()
		if !ok || len(key) == 0 {
			return nil, fmt.Errorf("%w: change %d key", ErrCorruptRecords, i)
		}
		c := Change{Key: string(key)}
		switch op {
		case opDelete:
			c.Delete = true
		case opPut:
			if c.Value, ok = bytesField(); !ok {
				return nil, fmt.Errorf("%w: change %d value", ErrCorruptRecords, i)
			}
		default:
			return nil, fmt.Errorf("%w: change %d op %d", ErrCorruptRecords, i, op)
		}
		out = append(out, c)
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the changes", ErrCorruptRecords, len(p))
	}
	return out, nil
}

// RecordSet is the durable metadata as records: group 0's state machine keeps one, applying
// each entry's changes, and snapshots it whole. It is not safe for concurrent use.
type RecordSet struct {
	recs map[string][]byte
}

// NewRecordSet returns an empty set.
func NewRecordSet() *RecordSet { return &RecordSet{recs: map[string][]byte{}} }

func (r *RecordSet) put(k string, v []byte) { r.recs[k] = v }

// Len is the number of records.
func (r *RecordSet) Len() int { return len(r.recs) }

// Apply applies changes in order. The set keeps the values (the caller must not modify them).
func (r *RecordSet) Apply(cs []Change) {
	for _, c := range cs {
		if c.Delete {
			delete(r.recs, c.Key)
		} else {
			r.recs[c.Key] = c.Value
		}
	}
}

// ApplyEntry applies one entry of group 0: record changes, or (written before records) the
// whole metadata as JSON, which replaces every record. queues reports whether a durable
// queue's record may have changed (the standbys follow those). On error the set is unchanged.
func (r *RecordSet) ApplyEntry(data []byte) (queues bool, err error) {
	if isLegacy(data) {
		rs, err := decodeLegacy(data)
		if err != nil {
			return false, err
		}
		r.recs = rs.recs
		return true, nil
	}
	cs, err := DecodeChanges(data)
	if err != nil {
		return false, err
	}
	for _, c := range cs {
		if c.Key[0] == recQueue {
			queues = true
		}
	}
	r.Apply(cs)
	return queues, nil
}

// Encode encodes the set as a snapshot: the puts of every record, in key order.
func (r *RecordSet) Encode() []byte {
	keys := slices.Sorted(maps.Keys(r.recs))
	cs := make([]Change, len(keys))
	for i, k := range keys {
		cs[i] = Change{Key: k, Value: r.recs[k]}
	}
	return EncodeChanges(cs)
}

// Equal reports whether two sets hold the same records.
func (r *RecordSet) Equal(o *RecordSet) bool {
	return maps.EqualFunc(r.recs, o.recs, bytes.Equal)
}

// DecodeRecordSet decodes a snapshot: Encode's output, or the whole-metadata JSON written
// before records. Empty data is an empty set.
func DecodeRecordSet(data []byte) (*RecordSet, error) {
	if len(data) == 0 {
		return NewRecordSet(), nil
	}
	if isLegacy(data) {
		return decodeLegacy(data)
	}
	cs, err := DecodeChanges(data)
	if err != nil {
		return nil, err
	}
	rs := NewRecordSet()
	for _, c := range cs {
		if c.Delete {
			return nil, fmt.Errorf("%w: a delete in a snapshot", ErrCorruptRecords)
		}
	}
	rs.Apply(cs)
	return rs, nil
}

func isLegacy(data []byte) bool { return len(data) > 0 && data[0] == '{' }

func decodeLegacy(data []byte) (*RecordSet, error) {
	s, err := restoreJSON(data)
	if err != nil {
		return nil, err
	}
	return s.Records()
}

// State rebuilds the metadata the records describe. An empty set gives a State with no vhost.
func (r *RecordSet) State() (*State, error) {
	s := &State{vhosts: map[string]*vhost{}}
	keys := make([]string, 0, len(r.recs))
	for k := range r.recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := s.restoreRecord(k, r.recs[k]); err != nil {
			return nil, fmt.Errorf("restore metadata: %w", err)
		}
	}
	for _, v := range s.vhosts {
		for _, q := range v.queues {
			if q.Group != 0 && (q.Group < QueueGroupBase || q.Group > QueueGroupBase+s.groupSeq) {
				return nil, fmt.Errorf("restore queue %q: group %d outside the %d handed out", q.Name, q.Group, s.groupSeq)
			}
		}
	}
	clear(s.touched)
	s.changeErr = nil
	return s, nil
}

func (s *State) restoreRecord(k string, val []byte) error {
	r, err := parseKey(k)
	if err != nil {
		return err
	}
	switch r.kind {
	case recGroupSeq:
		n, w := binary.Uvarint(val)
		if w != len(val) || w == 0 {
			return fmt.Errorf("%w: group counter", ErrCorruptRecords)
		}
		s.groupSeq = n
		return nil
	case recRetained:
		if len(val) == 0 {
			return fmt.Errorf("%w: empty retained message for %q", ErrCorruptRecords, r.name)
		}
		s.SetRetained(r.vhost, r.name, val)
		return nil
	case recVHost:
		return s.AddVHost(r.vhost)
	}
	v, ok := s.vhosts[r.vhost]
	if !ok {
		return fmt.Errorf("%w: record of kind %d in unknown vhost %q", ErrCorruptRecords, r.kind, r.vhost)
	}
	switch r.kind {
	case recExchange:
		var x recExchangeValue
		if err := json.Unmarshal(val, &x); err != nil {
			return fmt.Errorf("%w: exchange %q: %v", ErrCorruptRecords, r.name, err)
		}
		args, err := decodeTable(x.Args)
		if err != nil {
			return fmt.Errorf("%w: exchange %q: %v", ErrCorruptRecords, r.name, err)
		}
		if _, ok := exchange.ParseType(x.Type); !ok {
			return fmt.Errorf("%w: exchange %q of type %q", ErrCorruptRecords, r.name, x.Type)
		}
		v.putExchange(ExchangeDef{VHost: r.vhost, Name: r.name, Type: x.Type, Durable: true,
			AutoDelete: x.AutoDelete, Internal: x.Internal, Args: args})
	case recQueue:
		var q recQueueValue
		if err := json.Unmarshal(val, &q); err != nil {
			return fmt.Errorf("%w: queue %q: %v", ErrCorruptRecords, r.name, err)
		}
		args, err := decodeTable(q.Args)
		if err != nil {
			return fmt.Errorf("%w: queue %q: %v", ErrCorruptRecords, r.name, err)
		}
		v.queues[r.name] = QueueDef{VHost: r.vhost, Name: r.name, Durable: true, AutoDelete: q.AutoDelete, Args: args, Group: q.Group, Partition: q.Partition, Place: q.Place}
	case recBinding:
		v.router = v.router.WithBinding(r.binding)
	}
	return nil
}

// DurableQueues lists the durable queues the records name (only those records are decoded),
// ordered by vhost and name.
func (r *RecordSet) DurableQueues() ([]QueueDef, error) {
	var out []QueueDef
	for k, val := range r.recs {
		if k[0] != recQueue {
			continue
		}
		ref, err := parseKey(k)
		if err != nil {
			return nil, err
		}
		var q recQueueValue
		if err := json.Unmarshal(val, &q); err != nil {
			return nil, fmt.Errorf("%w: queue %q: %v", ErrCorruptRecords, ref.name, err)
		}
		out = append(out, QueueDef{VHost: ref.vhost, Name: ref.name, Durable: true, AutoDelete: q.AutoDelete, Group: q.Group, Partition: q.Partition, Place: q.Place})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].VHost != out[j].VHost {
			return out[i].VHost < out[j].VHost
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}
