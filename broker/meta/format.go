package meta

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/parleymq/parley/broker/message"
)

// typeClass is rabbit_misc:type_class/1: argument equivalence treats all integer types alike
// and both float types alike.
func typeClass(v any) string {
	switch t := message.TypeName(v); t {
	case "byte", "short", "signedint", "long", "decimal", "unsignedbyte", "unsignedshort", "unsignedint":
		return "int"
	case "float", "double":
		return "float"
	default:
		return t
	}
}

// erlangValue is how Erlang's ~p prints the value RabbitMQ holds for a field-table value.
func erlangValue(v any) string {
	switch x := v.(type) {
	case string:
		return erlangBinary(x)
	case []byte:
		return erlangBinary(string(x))
	case bool:
		return strconv.FormatBool(x)
	case float32:
		return erlangFloat(float64(x))
	case float64:
		return erlangFloat(x)
	case time.Time:
		return strconv.FormatInt(x.Unix(), 10)
	case nil:
		return "undefined"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = "{" + message.TypeName(e) + "," + erlangValue(e) + "}"
		}
		return "[" + strings.Join(parts, ",") + "]"
	case message.Table:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = "{" + erlangBinary(k) + "," + message.TypeName(x[k]) + "," + erlangValue(x[k]) + "}"
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	if i, ok := message.Int(v); ok {
		return strconv.FormatInt(i, 10)
	}
	return fmt.Sprint(v)
}

func erlangBinary(s string) string { return `<<"` + s + `">>` }

// erlangFloat prints like Erlang's shortest round-trip float format: always with a fraction.
func erlangFloat(f float64) string {
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if strings.ContainsAny(s, "e") {
		mant, exp, _ := strings.Cut(s, "e")
		if !strings.Contains(mant, ".") {
			mant += ".0"
		}
		if exp[0] == '+' {
			exp = exp[1:]
		}
		return mant + "e" + exp
	}
	if !strings.Contains(s, ".") && !strings.Contains(s, "Inf") && !strings.Contains(s, "NaN") {
		s += ".0"
	}
	return s
}

// valText is rabbit_misc:val/1 on a bare value: binaries as they are, anything else as ~p,
// in quotes.
func valText(v any) string {
	switch x := v.(type) {
	case string:
		return "'" + x + "'"
	case []byte:
		return "'" + string(x) + "'"
	}
	return "'" + erlangValue(v) + "'"
}

// typedValText is rabbit_misc:val/1 on a {Type, Value} pair, or "none" for a missing one.
func typedValText(v any, present bool) string {
	if !present {
		return "none"
	}
	var val string
	switch x := v.(type) {
	case string:
		val = x
	case []byte:
		val = string(x)
	default:
		val = erlangValue(v)
	}
	return "the value '" + val + "' of type '" + message.TypeName(v) + "'"
}

// erlangIdentical is Erlang's exact match (=:=) on the values RabbitMQ holds: long strings and
// byte arrays are both binaries, and integers never equal floats.
func erlangIdentical(a, b any) bool {
	as, aIsBin := binaryOf(a)
	bs, bIsBin := binaryOf(b)
	if aIsBin || bIsBin {
		return aIsBin && bIsBin && as == bs
	}
	ai, aInt := message.Int(a)
	bi, bInt := message.Int(b)
	if aInt || bInt {
		return aInt && bInt && ai == bi
	}
	af, aF := floatOf(a)
	bf, bF := floatOf(b)
	if aF || bF {
		return aF && bF && af == bf
	}
	return reflect.DeepEqual(a, b)
}

// erlangEqual is Erlang's == on RabbitMQ's values: like erlangIdentical, but integers and
// floats compare by value.
func erlangEqual(a, b any) bool {
	ai, aInt := message.Int(a)
	bi, bInt := message.Int(b)
	af, aF := floatOf(a)
	bf, bF := floatOf(b)
	switch {
	case aInt && bF:
		return float64(ai) == bf
	case aF && bInt:
		return af == float64(bi)
	}
	return erlangIdentical(a, b)
}

func binaryOf(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		return string(x), true
	}
	return "", false
}

func floatOf(v any) (float64, bool) {
	switch x := v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}
