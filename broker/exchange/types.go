package exchange

import (
	"math"
	"reflect"
	"time"

	"github.com/parleymq/parley/broker/message"
)

// Type is an exchange type.
type Type uint8

// The exchange types RabbitMQ ships with. AMQP 0-9-1 §3.1.3.
const (
	Direct Type = iota + 1
	Fanout
	Topic
	Headers
)

// ParseType maps the exchange.declare type field to a Type. Unknown names return false.
func ParseType(s string) (Type, bool) {
	switch s {
	case "direct":
		return Direct, true
	case "fanout":
		return Fanout, true
	case "topic":
		return Topic, true
	case "headers":
		return Headers, true
	}
	return 0, false
}

// String is the type's name as it appears on the wire.
func (t Type) String() string {
	switch t {
	case Direct:
		return "direct"
	case Fanout:
		return "fanout"
	case Topic:
		return "topic"
	case Headers:
		return "headers"
	}
	return "unknown"
}

// Dest is a binding's destination: a queue, or an exchange (exchange-to-exchange binding, a
// RabbitMQ extension).
type Dest struct {
	Name     string
	Exchange bool
}

// Binding routes messages from the exchange Source to Dest when Key (and, for headers
// exchanges, Args) match.
type Binding struct {
	Source string
	Dest   Dest
	Key    string
	Args   message.Table
}

// ExchangeInfo is what routing needs to know about an exchange.
type ExchangeInfo struct {
	Name     string
	Type     Type
	Internal bool
	// AlternateExchange receives messages this exchange's own bindings do not match at all
	// (the "alternate-exchange" argument). Empty means none.
	AlternateExchange string
}

// TablesEqual reports whether two field tables are equal key by key, value by value and type
// by type, as RabbitMQ compares binding arguments. A nil table equals an empty one.
func TablesEqual(a, b message.Table) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || !valuesIdentical(va, vb) {
			return false
		}
	}
	return true
}

// valuesIdentical compares two field values including their types.
func valuesIdentical(a, b any) bool {
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		return ok && x == y
	case int32:
		y, ok := b.(int32)
		return ok && x == y
	case int64:
		y, ok := b.(int64)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case nil:
		return b == nil
	case message.Table:
		y, ok := b.(message.Table)
		return ok && TablesEqual(x, y)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !valuesIdentical(x[i], y[i]) {
				return false
			}
		}
		return true
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	}
	return reflect.DeepEqual(a, b)
}

// headerValuesMatch compares a headers-exchange binding value with a message header value the
// way RabbitMQ does (rabbit_exchange_type_headers: PV == DV on the untyped values). Erlang's ==
// compares numbers by value across integer and float types, and long strings and byte arrays
// are both binaries; nested tables and arrays keep their type tags, so they compare typed.
func headerValuesMatch(pattern, data any) bool {
	switch p := pattern.(type) {
	case string:
		switch d := data.(type) {
		case string:
			return p == d
		case []byte:
			return p == string(d)
		}
		return false
	case []byte:
		switch d := data.(type) {
		case string:
			return string(p) == d
		case []byte:
			return string(p) == string(d)
		}
		return false
	case bool:
		d, ok := data.(bool)
		return ok && p == d
	}
	if pi, pf, pIsFloat, pok := number(pattern); pok {
		di, df, dIsFloat, dok := number(data)
		if !dok {
			return false
		}
		if !pIsFloat && !dIsFloat {
			return pi == di
		}
		if !pIsFloat {
			pf = float64(pi)
		}
		if !dIsFloat {
			df = float64(di)
		}
		return pf == df
	}
	return valuesIdentical(pattern, data)
}

// number returns v as an integer or, when isFloat, as a float. Timestamps are integers
// (seconds) in RabbitMQ's field tables.
func number(v any) (i int64, f float64, isFloat, ok bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), 0, false, true
	case uint8:
		return int64(x), 0, false, true
	case int16:
		return int64(x), 0, false, true
	case uint16:
		return int64(x), 0, false, true
	case int32:
		return int64(x), 0, false, true
	case uint32:
		return int64(x), 0, false, true
	case int64:
		return x, 0, false, true
	case int:
		return int64(x), 0, false, true
	case uint64:
		if x > math.MaxInt64 {
			return 0, float64(x), true, true
		}
		return int64(x), 0, false, true
	case float32:
		return 0, float64(x), true, true
	case float64:
		return 0, x, true, true
	case time.Time:
		return x.Unix(), 0, false, true
	}
	return 0, 0, false, false
}
