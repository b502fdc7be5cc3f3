package meta

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
)

// The whole-metadata JSON that group 0's entries and snapshots held before records
// (records.go), read by restoreJSON so that old data still recovers: every vhost, its durable
// exchanges and queues, and the bindings between durable ends. Field-table values are JSON
// tagged by their AMQP type code, so a restore gives back the exact types (argument
// equivalence depends on them); exchange and queue records still encode their arguments so.

// ErrUnsupportedValue reports a field-table value the snapshot cannot encode.
var ErrUnsupportedValue = errors.New("unsupported field-table value")

const snapshotVersion = 1

type snapState struct {
	Version int         `json:"version"`
	VHosts  []snapVHost `json:"vhosts"`
	// GroupSeq is the last durable queue group handed out (absent in metadata written before
	// groups were recorded).
	GroupSeq uint64 `json:"group_seq,omitempty"`
}

type snapVHost struct {
	Name      string         `json:"name"`
	Exchanges []snapExchange `json:"exchanges,omitempty"`
	Queues    []snapQueue    `json:"queues,omitempty"`
	Bindings  []snapBinding  `json:"bindings,omitempty"`
	Retained  []snapRetained `json:"retained,omitempty"`
}

// snapRetained is an MQTT retained message: its topic and the message in the core's binary
// message encoding.
type snapRetained struct {
	Topic   string `json:"topic"`
	Message []byte `json:"message"`
}

type snapExchange struct {
	Name       string               `json:"name"`
	Type       string               `json:"type"`
	AutoDelete bool                 `json:"auto_delete,omitempty"`
	Internal   bool                 `json:"internal,omitempty"`
	Args       map[string]snapValue `json:"args,omitempty"`
}

type snapQueue struct {
	Name       string               `json:"name"`
	AutoDelete bool                 `json:"auto_delete,omitempty"`
	Args       map[string]snapValue `json:"args,omitempty"`
	Group      uint64               `json:"group,omitempty"`
}

type snapBinding struct {
	Source     string               `json:"source"`
	Dest       string               `json:"dest"`
	ToExchange bool                 `json:"to_exchange,omitempty"`
	Key        string               `json:"key"`
	Args       map[string]snapValue `json:"args,omitempty"`
}

type snapValue struct {
	T string          `json:"t"`
	V json.RawMessage `json:"v,omitempty"`
}

// restoreJSON rebuilds a State from the whole-metadata JSON group 0 held before records
// (records.go reads old entries and snapshots with it).
func restoreJSON(data []byte) (*State, error) {
	var st snapState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("restore metadata: %w", err)
	}
	if st.Version != snapshotVersion {
		return nil, fmt.Errorf("restore metadata: unknown snapshot version %d", st.Version)
	}
	s := &State{vhosts: map[string]*vhost{}, groupSeq: st.GroupSeq}
	for _, sv := range st.VHosts {
		if err := s.AddVHost(sv.Name); err != nil {
			return nil, fmt.Errorf("restore metadata: %w", err)
		}
		v := s.vhosts[sv.Name]
		for _, x := range sv.Exchanges {
			args, err := decodeTable(x.Args)
			if err != nil {
				return nil, fmt.Errorf("restore exchange %q: %w", x.Name, err)
			}
			v.putExchange(ExchangeDef{VHost: sv.Name, Name: x.Name, Type: x.Type, Durable: true,
				AutoDelete: x.AutoDelete, Internal: x.Internal, Args: args})
		}
		for _, q := range sv.Queues {
			args, err := decodeTable(q.Args)
			if err != nil {
				return nil, fmt.Errorf("restore queue %q: %w", q.Name, err)
			}
			if q.Group != 0 && (q.Group < QueueGroupBase || q.Group > QueueGroupBase+st.GroupSeq) {
				return nil, fmt.Errorf("restore queue %q: group %d outside the %d handed out", q.Name, q.Group, st.GroupSeq)
			}
			v.queues[q.Name] = QueueDef{VHost: sv.Name, Name: q.Name, Durable: true, AutoDelete: q.AutoDelete, Args: args, Group: q.Group}
		}
		for _, b := range sv.Bindings {
			args, err := decodeTable(b.Args)
			if err != nil {
				return nil, fmt.Errorf("restore binding from %q: %w", b.Source, err)
			}
			v.router = v.router.WithBinding(exchange.Binding{Source: b.Source,
				Dest: exchange.Dest{Name: b.Dest, Exchange: b.ToExchange}, Key: b.Key, Args: args})
		}
		for _, r := range sv.Retained {
			s.SetRetained(sv.Name, r.Topic, r.Message)
		}
	}
	return s, nil
}

func encodeTable(t message.Table) (map[string]snapValue, error) {
	if len(t) == 0 {
		return nil, nil
	}
	out := make(map[string]snapValue, len(t))
	for k, v := range t {
		sv, err := encodeValue(v)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		out[k] = sv
	}
	return out, nil
}

func encodeValue(v any) (snapValue, error) {
	var tag string
	var payload any = v
	switch x := v.(type) {
	case string:
		tag = "S"
	case bool:
		tag = "t"
	case int8:
		tag = "b"
	case uint8:
		tag = "B"
	case int16:
		tag = "s"
	case uint16:
		tag = "u"
	case int32:
		tag = "I"
	case uint32:
		tag = "i"
	case int64:
		tag = "l"
	case float32:
		tag = "f"
	case float64:
		tag = "d"
	case []byte:
		tag = "x"
	case time.Time:
		tag, payload = "T", x.UnixNano()
	case nil:
		return snapValue{T: "V"}, nil
	case message.Table:
		t, err := encodeTable(x)
		if err != nil {
			return snapValue{}, err
		}
		tag, payload = "F", t
	case []any:
		arr := make([]snapValue, len(x))
		for i, e := range x {
			sv, err := encodeValue(e)
			if err != nil {
				return snapValue{}, err
			}
			arr[i] = sv
		}
		tag, payload = "A", arr
	default:
		return snapValue{}, fmt.Errorf("%w: %T", ErrUnsupportedValue, v)
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return snapValue{}, fmt.Errorf("encode %T: %w", v, err)
	}
	return snapValue{T: tag, V: raw}, nil
}

func decodeTable(m map[string]snapValue) (message.Table, error) {
	if len(m) == 0 {
		return nil, nil
	}
	t := make(message.Table, len(m))
	for k, sv := range m {
		v, err := decodeValue(sv)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		t[k] = v
	}
	return t, nil
}

func decodeInto[T any](raw json.RawMessage) (any, error) {
	var x T
	err := json.Unmarshal(raw, &x)
	return x, err
}

func decodeValue(sv snapValue) (any, error) {
	switch sv.T {
	case "S":
		return decodeInto[string](sv.V)
	case "t":
		return decodeInto[bool](sv.V)
	case "b":
		return decodeInto[int8](sv.V)
	case "B":
		return decodeInto[uint8](sv.V)
	case "s":
		return decodeInto[int16](sv.V)
	case "u":
		return decodeInto[uint16](sv.V)
	case "I":
		return decodeInto[int32](sv.V)
	case "i":
		return decodeInto[uint32](sv.V)
	case "l":
		return decodeInto[int64](sv.V)
	case "f":
		return decodeInto[float32](sv.V)
	case "d":
		return decodeInto[float64](sv.V)
	case "x":
		return decodeInto[[]byte](sv.V)
	case "V":
		return nil, nil
	case "T":
		var ns int64
		if err := json.Unmarshal(sv.V, &ns); err != nil {
			return nil, err
		}
		return time.Unix(0, ns).UTC(), nil
	case "F":
		var m map[string]snapValue
		if err := json.Unmarshal(sv.V, &m); err != nil {
			return nil, err
		}
		t, err := decodeTable(m)
		if t == nil && err == nil {
			t = message.Table{}
		}
		return t, err
	case "A":
		var arr []snapValue
		if err := json.Unmarshal(sv.V, &arr); err != nil {
			return nil, err
		}
		out := make([]any, len(arr))
		for i, e := range arr {
			v, err := decodeValue(e)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: type tag %q", ErrUnsupportedValue, sv.T)
}
