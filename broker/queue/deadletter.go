package queue

import (
	"fmt"
	"slices"
	"time"

	"github.com/parleymq/parley/broker/message"
)

// DeadLetterMessage builds the message a dead letter republishes, with the exchange and
// routing key to publish it to. It follows rabbit_dead_letter:make_msg of the RabbitMQ we
// test against (3.10; https://www.rabbitmq.com/docs/dlx#effects):
//
//   - the routing key is x-dead-letter-routing-key when set (and the CC header is then
//     removed), else the message's own;
//   - the expiration property is removed, its value kept as original-expiration;
//   - x-death, an array of tables, gets an entry for this queue and reason first: a new one
//     {count 1, reason, queue, time, exchange, routing-keys [, original-expiration]}, or the
//     existing one for the same queue and reason with its count incremented (the rest of
//     that entry, its time included, is kept as it was);
//   - the first death also sets x-first-death-reason, -queue and -exchange. (RabbitMQ 3.13
//     added x-last-death-*; the reference broker does not send them, so neither do we.)
//
// An x-death header that is not an array is replaced, as RabbitMQ does for clients that
// republish it as a string. The original message is never modified; the body is shared.
func DeadLetterMessage(d DeadLetter, queue string, now int64, cfg Config) (m *message.Message, exchange, routingKey string) {
	src := d.Msg
	props := src.Properties
	reason := d.Reason.String()

	// routing-keys: the basic.publish key, then the CC and BCC keys it was also routed by
	// (rabbit_basic:header_routes).
	rks := []any{src.RoutingKey}
	rks = appendHeaderRoutes(rks, src.Properties.Headers, "CC")
	rks = appendHeaderRoutes(rks, src.Properties.Headers, "BCC")

	info := message.Table{
		"count":        int64(1),
		"reason":       reason,
		"queue":        queue,
		"time":         time.Unix(now/1000, 0).UTC(),
		"exchange":     src.Exchange,
		"routing-keys": rks,
	}
	if props.Flags&message.FlagExpiration != 0 {
		info["original-expiration"] = props.Expiration
	}

	headers := make(message.Table, len(props.Headers)+4)
	for k, v := range props.Headers {
		headers[k] = v
	}
	switch prior := headers["x-death"].(type) {
	case nil:
		if _, present := headers["x-death"]; present {
			headers["x-death"] = []any{info}
			break
		}
		headers["x-first-death-reason"] = reason
		headers["x-first-death-queue"] = queue
		headers["x-first-death-exchange"] = src.Exchange
		headers["x-death"] = []any{info}
	case []any:
		headers["x-death"] = updateDeaths(prior, info, queue, reason)
	default:
		headers["x-death"] = []any{info}
	}

	routingKey = src.RoutingKey
	if cfg.HasDeadLetterRoutingKey {
		routingKey = cfg.DeadLetterRoutingKey
		delete(headers, "CC")
	}

	props.Headers = headers
	props.Flags |= message.FlagHeaders
	props.Flags &^= message.FlagExpiration
	props.Expiration = ""
	m = &message.Message{
		Exchange:   cfg.DeadLetterExchange,
		RoutingKey: routingKey,
		Properties: props,
		Body:       src.Body,
	}
	return m, cfg.DeadLetterExchange, routingKey
}

func appendHeaderRoutes(rks []any, h message.Table, name string) []any {
	switch v := h[name].(type) {
	case []any:
		for _, k := range v {
			if s, ok := k.(string); ok {
				rks = append(rks, s)
			}
		}
	}
	return rks
}

// updateDeaths returns a new x-death array with this death first. It reproduces
// rabbit_dead_letter:update_x_death_header exactly, quirks included: when there is more than
// one entry, entries are first grouped by queue and reason (brokers before
// rabbitmq-server#78 wrote one entry per death), which keeps the first entry of each group
// (given a count of the group's size if it has none) and reverses their order; the entry for
// this queue and reason then has its count incremented and moves first. Observed on the
// reference broker: deaths in queues 1, 2, 3, 4 give x-death [4, 2, 1, 3].
func updateDeaths(prior []any, info message.Table, queue, reason string) []any {
	type key struct{ q, r string }
	keyOf := func(t message.Table) key { return key{fieldKey(t["queue"]), fieldKey(t["reason"])} }

	grouped := prior
	if len(prior) > 1 {
		sizes := make(map[key]int64, len(prior))
		for _, e := range prior {
			if t, ok := e.(message.Table); ok {
				sizes[keyOf(t)]++
			}
		}
		grouped = make([]any, 0, len(sizes))
		for _, e := range prior {
			t, ok := e.(message.Table)
			if !ok {
				continue
			}
			k := keyOf(t)
			n, seen := sizes[k]
			if !seen {
				continue
			}
			delete(sizes, k)
			if _, has := t["count"]; !has {
				t = withCount(t, n)
			}
			grouped = append(grouped, t)
		}
		slices.Reverse(grouped)
	}

	out := make([]any, 1, len(grouped)+1)
	out[0] = info
	want := key{queue, reason}
	for _, e := range grouped {
		t, ok := e.(message.Table)
		if ok && keyOf(t) == want {
			n, has := countOf(t["count"])
			if !has {
				n = 0
			}
			out[0] = withCount(t, n+1)
			continue
		}
		out = append(out, e)
	}
	return out
}

func withCount(t message.Table, n int64) message.Table {
	c := make(message.Table, len(t)+1)
	for k, v := range t {
		c[k] = v
	}
	c["count"] = n
	return c
}

func countOf(v any) (int64, bool) {
	n, err := intArg(v)
	return n, err == nil
}

// fieldKey makes a header value usable as a map key: strings as they are, anything else
// (a client's odd x-death) tagged with its type so it never equals a string.
func fieldKey(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprintf("\x00%T:%v", v, v)
}
