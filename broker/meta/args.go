package meta

import (
	"regexp"
	"sort"
	"strconv"

	"github.com/parleymq/parley/broker/message"
)

// Queue argument validation, as rabbit_amqqueue:check_declare_arguments/2 does it for a new
// queue: x-queue-type first, then each argument the queue type knows, in declare_args() order,
// then any argument only another queue type knows. A failure is 406 with the reason printed
// as Erlang's ~p prints it (rabbit_amqqueue:check_arguments_type_and_value/3).

// Queue types, named as RabbitMQ names their modules in reply texts.
const (
	typeClassic = "rabbit_classic_queue"
	typeQuorum  = "rabbit_quorum_queue"
	typeStream  = "rabbit_stream_queue"
)

// queueTypeArgs is each type's capabilities() queue_arguments.
var queueTypeArgs = map[string][]string{
	typeClassic: {"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
		"x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode",
		"x-queue-version", "x-single-active-consumer", "x-queue-type", "x-queue-master-locator"},
	typeQuorum: {"x-dead-letter-exchange", "x-dead-letter-routing-key", "x-dead-letter-strategy",
		"x-expires", "x-max-length", "x-max-length-bytes", "x-max-in-memory-length",
		"x-max-in-memory-bytes", "x-overflow", "x-single-active-consumer", "x-queue-type",
		"x-quorum-initial-group-size", "x-delivery-limit", "x-message-ttl", "x-queue-leader-locator"},
	typeStream: {"x-max-length-bytes", "x-queue-type", "x-max-age", "x-stream-max-segment-size-bytes",
		"x-initial-cluster-size", "x-queue-leader-locator"},
}

func hasArg(list []string, k string) bool {
	for _, x := range list {
		if x == k {
			return true
		}
	}
	return false
}

// queueType is rabbit_amqqueue:get_queue_type/1 (the default is classic).
func queueType(args message.Table) string {
	switch args["x-queue-type"] {
	case "quorum":
		return typeQuorum
	case "stream":
		return typeStream
	}
	return typeClassic
}

// argValidator returns "" when the value is acceptable, else the ~p text of the error term.
type argValidator func(v any, args message.Table) string

type declareArg struct {
	key   string
	check argValidator
}

// declareArgs is rabbit_amqqueue:declare_args(), in its order.
var declareArgs = []declareArg{
	{"x-expires", checkExpires},
	{"x-message-ttl", checkMessageTTL},
	{"x-dead-letter-exchange", checkDLX},
	{"x-dead-letter-routing-key", checkDLXRoutingKey},
	{"x-dead-letter-strategy", oneOf(`invalid_dlx_strategy`, "at-most-once", "at-least-once")},
	{"x-max-length", checkNonNegInt},
	{"x-max-length-bytes", checkNonNegInt},
	{"x-max-in-memory-length", checkNonNegInt},
	{"x-max-in-memory-bytes", checkNonNegInt},
	{"x-max-priority", checkMaxPriority},
	{"x-overflow", oneOf("invalid_overflow", "drop-head", "reject-publish", "reject-publish-dlx")},
	{"x-queue-mode", checkQueueMode},
	{"x-queue-version", checkQueueVersion},
	{"x-single-active-consumer", checkBool},
	{"x-queue-type", checkQueueType},
	{"x-quorum-initial-group-size", checkPositiveInt},
	{"x-max-age", checkMaxAge},
	{"x-stream-max-segment-size-bytes", checkNonNegInt},
	{"x-initial-cluster-size", checkPositiveInt},
	{"x-queue-leader-locator", oneOf("invalid_queue_locator_arg", "client-local", "balanced", "random", "least-leaders")},
}

func erlangString(s string) string { return strconv.Quote(s) }

func unacceptable(v any) string { return "{unacceptable_type," + message.TypeName(v) + "}" }

func checkInt(v any) (int64, string) {
	i, ok := message.Int(v)
	if !ok {
		return 0, erlangString("expected integer, got " + message.TypeName(v))
	}
	return i, ""
}

func checkNonNegInt(v any, _ message.Table) string {
	i, e := checkInt(v)
	if e != "" {
		return e
	}
	if i < 0 {
		return "{value_negative," + strconv.FormatInt(i, 10) + "}"
	}
	return ""
}

func checkPositiveInt(v any, args message.Table) string {
	if e := checkNonNegInt(v, args); e != "" {
		return e
	}
	if i, _ := message.Int(v); i == 0 {
		return "{value_zero,0}"
	}
	return ""
}

// checkExpiry is rabbit_misc:check_expiry/1: at most ten years in milliseconds.
func checkExpiry(i int64) string {
	switch {
	case i < 0:
		return "{value_negative," + strconv.FormatInt(i, 10) + "}"
	case i > 315_360_000_000:
		return "{value_too_large," + strconv.FormatInt(i, 10) + "}"
	}
	return ""
}

func checkMessageTTL(v any, _ message.Table) string {
	i, e := checkInt(v)
	if e != "" {
		return e
	}
	return checkExpiry(i)
}

func checkExpires(v any, _ message.Table) string {
	i, e := checkInt(v)
	if e != "" {
		return e
	}
	if i == 0 {
		return "{value_zero,0}"
	}
	return checkExpiry(i)
}

func checkMaxPriority(v any, args message.Table) string {
	if e := checkNonNegInt(v, args); e != "" {
		return e
	}
	if i, _ := message.Int(v); i > 255 {
		return "{max_value_exceeded," + strconv.FormatInt(i, 10) + "}"
	}
	return ""
}

func checkDLX(v any, _ message.Table) string {
	if _, ok := v.(string); !ok {
		return unacceptable(v)
	}
	return ""
}

func checkDLXRoutingKey(v any, args message.Table) string {
	if _, ok := v.(string); !ok {
		return unacceptable(v)
	}
	if _, ok := args["x-dead-letter-exchange"]; !ok {
		return "routing_key_but_no_dlx_defined"
	}
	return ""
}

func oneOf(errTerm string, allowed ...string) argValidator {
	return func(v any, _ message.Table) string {
		s, ok := v.(string)
		if !ok {
			return unacceptable(v)
		}
		for _, a := range allowed {
			if s == a {
				return ""
			}
		}
		return errTerm
	}
}

func checkQueueMode(v any, _ message.Table) string {
	s, ok := v.(string)
	if !ok {
		return unacceptable(v)
	}
	if s == "default" || s == "lazy" {
		return ""
	}
	return erlangString("unsupported queue mode '" + s + "'")
}

func checkQueueVersion(v any, args message.Table) string {
	if e := checkNonNegInt(v, args); e != "" {
		return e
	}
	if i, _ := message.Int(v); i != 1 && i != 2 {
		return erlangString("unsupported queue version '" + strconv.FormatInt(i, 10) + "'")
	}
	return ""
}

func checkBool(v any, _ message.Table) string {
	if _, ok := v.(bool); !ok {
		return unacceptable(v)
	}
	return ""
}

func checkQueueType(v any, _ message.Table) string {
	s, ok := v.(string)
	if !ok {
		return unacceptable(v)
	}
	switch s {
	case "classic", "quorum", "stream":
		return ""
	}
	return erlangString("unsupported queue type '" + s + "'")
}

var maxAgeRe = regexp.MustCompile(`^([0-9]*)(.*)$`)

func checkMaxAge(v any, _ message.Table) string {
	s, ok := v.(string)
	if !ok {
		return unacceptable(v)
	}
	m := maxAgeRe.FindStringSubmatch(s)
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n <= 0 {
		return "invalid_max_age"
	}
	switch m[2] {
	case "Y", "M", "D", "h", "m", "s":
		return ""
	}
	return "invalid_max_age"
}

// checkDeclareArgs validates a new queue's arguments.
func checkDeclareArgs(res string, args message.Table) error {
	fail := func(key, reason string) error {
		return Errorf(PreconditionFailed, "invalid arg '%s' for %s: %s", key, res, reason)
	}
	if v, ok := args["x-queue-type"]; ok {
		if e := checkQueueType(v, args); e != "" {
			return fail("x-queue-type", e)
		}
	}
	qt := queueType(args)
	known := queueTypeArgs[qt]
	for _, a := range declareArgs {
		if !hasArg(known, a.key) {
			continue
		}
		if v, ok := args[a.key]; ok {
			if e := a.check(v, args); e != "" {
				return fail(a.key, e)
			}
		}
	}
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if hasArg(known, k) {
			continue
		}
		for t, list := range queueTypeArgs {
			if t != qt && hasArg(list, k) {
				return Errorf(PreconditionFailed, "invalid arg '%s' for %s of queue type %s", k, res, qt)
			}
		}
	}
	return nil
}
