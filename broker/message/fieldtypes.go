package message

import "time"

// TypeName is RabbitMQ's name for a field-table value's type (rabbit_binary_parser), the word
// its reply texts print ("of type 'signedint'", "expected integer, got longstr").
func TypeName(v any) string {
	switch v.(type) {
	case string:
		return "longstr"
	case bool:
		return "bool"
	case int8:
		return "byte"
	case uint8:
		return "unsignedbyte"
	case int16:
		return "short"
	case uint16:
		return "unsignedshort"
	case int32:
		return "signedint"
	case uint32:
		return "unsignedint"
	case int64, int:
		return "long"
	case float32:
		return "float"
	case float64:
		return "double"
	case []byte:
		return "binary"
	case []any:
		return "array"
	case time.Time:
		return "timestamp"
	case Table:
		return "table"
	case nil:
		return "void"
	}
	return "decimal" // Decimal, or the AMQP codec's own: the only other field type
}

// Int reads a field-table value of any integer type, as RabbitMQ accepts integer arguments
// of every width; ok is false for any other type.
func Int(v any) (n int64, ok bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case uint8:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	}
	return 0, false
}
