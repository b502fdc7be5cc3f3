package queue

import (
	"reflect"
	"testing"
	"time"

	"github.com/parleymq/parley/broker/message"
)

// The expectations below were taken from the reference broker (RabbitMQ 3.10.8).
func TestDeadLetterMessage(t *testing.T) {
	const now = 1_700_000_000_500
	ts := time.Unix(1_700_000_000, 0).UTC()
	dlxTo := func(ex string, rk ...string) Config {
		c := cfgDefault()
		c.DeadLetterExchange, c.HasDeadLetterExchange = ex, true
		if len(rk) > 0 {
			c.DeadLetterRoutingKey, c.HasDeadLetterRoutingKey = rk[0], true
		}
		return c
	}
	death := func(count int64, reason, queue, exchange string, rks ...any) message.Table {
		return message.Table{"count": count, "reason": reason, "queue": queue, "time": ts, "exchange": exchange, "routing-keys": rks}
	}
	tests := []struct {
		name    string
		msg     message.Message
		reason  Reason
		queue   string
		cfg     Config
		wantEx  string
		wantRK  string
		headers message.Table
	}{
		{
			name:   "first death, dead-letter key drops CC, keeps expiration as original-expiration",
			msg:    message.Message{Exchange: "", RoutingKey: "src", Properties: message.Properties{Flags: message.FlagExpiration | message.FlagHeaders | message.FlagPriority, Expiration: "60000", Priority: 3, Headers: message.Table{"CC": []any{"cc1"}, "h": "v"}}},
			reason: Rejected, queue: "src", cfg: dlxTo("", "dst"),
			wantEx: "", wantRK: "dst",
			headers: message.Table{
				"h":                      "v",
				"x-first-death-reason":   "rejected",
				"x-first-death-queue":    "src",
				"x-first-death-exchange": "",
				"x-death": []any{func() message.Table {
					d := death(1, "rejected", "src", "", "src", "cc1")
					d["original-expiration"] = "60000"
					return d
				}()},
			},
		},
		{
			name:   "no dead-letter key keeps the routing key and CC",
			msg:    message.Message{Exchange: "amq.direct", RoutingKey: "a", Properties: message.Properties{Flags: message.FlagHeaders, Headers: message.Table{"CC": []any{"c"}}}},
			reason: MaxLen, queue: "qa", cfg: dlxTo("dlx"),
			wantEx: "dlx", wantRK: "a",
			headers: message.Table{
				"CC":                     []any{"c"},
				"x-first-death-reason":   "maxlen",
				"x-first-death-queue":    "qa",
				"x-first-death-exchange": "amq.direct",
				"x-death":                []any{death(1, "maxlen", "qa", "amq.direct", "a", "c")},
			},
		},
		{
			name:   "an x-death that is not an array is replaced, without first-death headers",
			msg:    message.Message{RoutingKey: "a", Properties: message.Properties{Flags: message.FlagHeaders, Headers: message.Table{"x-death": "junk"}}},
			reason: MaxLen, queue: "qa", cfg: dlxTo("dlx"),
			wantEx: "dlx", wantRK: "a",
			headers: message.Table{"x-death": []any{death(1, "maxlen", "qa", "", "a")}},
		},
		{
			name: "same queue and reason: count incremented, entry kept and moved first",
			msg: message.Message{RoutingKey: "src", Properties: message.Properties{Flags: message.FlagHeaders, Headers: message.Table{
				"x-first-death-reason": "rejected", "x-first-death-queue": "src", "x-first-death-exchange": "",
				"x-death": []any{
					message.Table{"count": int64(1), "reason": "expired", "queue": "dst", "time": time.Unix(5, 0), "exchange": "", "routing-keys": []any{"dst"}},
					message.Table{"count": int64(1), "reason": "rejected", "queue": "src", "time": time.Unix(4, 0), "exchange": "", "routing-keys": []any{"src"}},
				},
			}}},
			reason: Rejected, queue: "src", cfg: dlxTo("", "dst"),
			wantEx: "", wantRK: "dst",
			headers: message.Table{
				"x-first-death-reason": "rejected", "x-first-death-queue": "src", "x-first-death-exchange": "",
				"x-death": []any{
					message.Table{"count": int64(2), "reason": "rejected", "queue": "src", "time": time.Unix(4, 0), "exchange": "", "routing-keys": []any{"src"}},
					message.Table{"count": int64(1), "reason": "expired", "queue": "dst", "time": time.Unix(5, 0), "exchange": "", "routing-keys": []any{"dst"}},
				},
			},
		},
		{
			name: "RabbitMQ reverses the older entries when there are several",
			msg: message.Message{RoutingKey: "4", Properties: message.Properties{Flags: message.FlagHeaders, Headers: message.Table{
				"x-death": []any{
					message.Table{"count": int64(1), "reason": "rejected", "queue": "q3"},
					message.Table{"count": int64(1), "reason": "rejected", "queue": "q1"},
					message.Table{"count": int64(1), "reason": "rejected", "queue": "q2"},
				},
			}}},
			reason: Rejected, queue: "q4", cfg: dlxTo("", "5"),
			wantEx: "", wantRK: "5",
			headers: message.Table{
				"x-death": []any{
					death(1, "rejected", "q4", "", "4"),
					message.Table{"count": int64(1), "reason": "rejected", "queue": "q2"},
					message.Table{"count": int64(1), "reason": "rejected", "queue": "q1"},
					message.Table{"count": int64(1), "reason": "rejected", "queue": "q3"},
				},
			},
		},
		{
			name: "legacy duplicate entries are folded and counted",
			msg: message.Message{RoutingKey: "k", Properties: message.Properties{Flags: message.FlagHeaders, Headers: message.Table{
				"x-death": []any{
					message.Table{"reason": "expired", "queue": "a"},
					message.Table{"reason": "expired", "queue": "a"},
					message.Table{"reason": "rejected", "queue": "b"},
				},
			}}},
			reason: Expired, queue: "a", cfg: dlxTo("x"),
			wantEx: "x", wantRK: "k",
			headers: message.Table{
				"x-death": []any{
					message.Table{"count": int64(3), "reason": "expired", "queue": "a"},
					message.Table{"count": int64(1), "reason": "rejected", "queue": "b"},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := tt.msg
			origHeaders := deepCopy(orig.Properties.Headers)
			m, ex, rk := DeadLetterMessage(DeadLetter{Msg: &orig, Reason: tt.reason}, tt.queue, now, tt.cfg)
			if ex != tt.wantEx || rk != tt.wantRK || m.Exchange != tt.wantEx || m.RoutingKey != tt.wantRK {
				t.Fatalf("exchange, key = %q %q (message %q %q), want %q %q", ex, rk, m.Exchange, m.RoutingKey, tt.wantEx, tt.wantRK)
			}
			if !reflect.DeepEqual(m.Properties.Headers, tt.headers) {
				t.Fatalf("headers:\n got %#v\nwant %#v", m.Properties.Headers, tt.headers)
			}
			if m.Properties.Flags&message.FlagExpiration != 0 || m.Properties.Expiration != "" {
				t.Fatalf("expiration kept: %q", m.Properties.Expiration)
			}
			if m.Properties.Flags&message.FlagHeaders == 0 {
				t.Fatalf("headers flag not set")
			}
			if m.Properties.Priority != orig.Properties.Priority {
				t.Fatalf("priority changed")
			}
			if !reflect.DeepEqual(orig.Properties.Headers, origHeaders) {
				t.Fatalf("original message modified: %#v", orig.Properties.Headers)
			}
		})
	}
}

func deepCopy(v message.Table) message.Table {
	if v == nil {
		return nil
	}
	c := make(message.Table, len(v))
	for k, x := range v {
		switch y := x.(type) {
		case message.Table:
			c[k] = deepCopy(y)
		case []any:
			a := make([]any, len(y))
			for i, e := range y {
				if t, ok := e.(message.Table); ok {
					a[i] = deepCopy(t)
				} else {
					a[i] = e
				}
			}
			c[k] = a
		default:
			c[k] = x
		}
	}
	return c
}
