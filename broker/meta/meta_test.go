package meta

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
)

type T = message.Table

const lockedText = "cannot obtain exclusive access to locked queue 'qe' in vhost '/'. It could be originally " +
	"declared on another connection or the exclusive property value does not match that of the original declaration."

// step is one operation of a script and the reply RabbitMQ 3.10.8 gave for it ("" = ok).
type step struct {
	name string
	do   func(s *State) error
	want string // full reply text, "" for success
}

func xdecl(name, typ string, durable, autoDelete, internal bool, args T) func(*State) error {
	return func(s *State) error {
		_, err := s.DeclareExchange(ExchangeDef{VHost: "/", Name: name, Type: typ, Durable: durable,
			AutoDelete: autoDelete, Internal: internal, Args: args}, false)
		return err
	}
}

func xpassive(name string) func(*State) error {
	return func(s *State) error {
		_, err := s.DeclareExchange(ExchangeDef{VHost: "/", Name: name, Type: "fanout", Durable: true}, true)
		return err
	}
}

func xdel(name string, ifUnused bool) func(*State) error {
	return func(s *State) error { return s.DeleteExchange("/", name, ifUnused) }
}

func qdecl(name string, durable, exclusive, autoDelete bool, owner uint64, args T) func(*State) error {
	return func(s *State) error {
		_, _, err := s.DeclareQueue(QueueDef{VHost: "/", Name: name, Durable: durable, Exclusive: exclusive,
			AutoDelete: autoDelete, Owner: owner, Args: args}, false)
		return err
	}
}

func qpassive(name string, owner uint64) func(*State) error {
	return func(s *State) error {
		_, _, err := s.DeclareQueue(QueueDef{VHost: "/", Name: name, Durable: true, Owner: owner}, true)
		return err
	}
}

func qdel(name string, owner uint64) func(*State) error {
	return func(s *State) error { _, err := s.DeleteQueue("/", name, owner); return err }
}

func bind(src, dst string, toExchange bool, key string, args T, owner uint64) func(*State) error {
	return func(s *State) error {
		return s.Bind(BindingDef{VHost: "/", Source: src, Dest: exchange.Dest{Name: dst, Exchange: toExchange},
			Key: key, Args: args}, owner)
	}
}

func unbind(src, dst string, toExchange bool, key string, args T, owner uint64) func(*State) error {
	return func(s *State) error {
		return s.Unbind(BindingDef{VHost: "/", Source: src, Dest: exchange.Dest{Name: dst, Exchange: toExchange},
			Key: key, Args: args}, owner)
	}
}

func runScript(t *testing.T, s *State, steps []step) {
	t.Helper()
	for _, st := range steps {
		err := st.do(s)
		got := ""
		if err != nil {
			var me *Error
			if !errors.As(err, &me) {
				t.Errorf("%s: error %v is not a *meta.Error", st.name, err)
				continue
			}
			got = err.Error()
		}
		if got != st.want {
			t.Errorf("%s:\n got  %q\n want %q", st.name, got, st.want)
		}
	}
}

func TestExchangeDeclareRules(t *testing.T) {
	runScript(t, New(), []step{
		{"unknown type", xdecl("x", "foo", false, false, false, nil), "COMMAND_INVALID - invalid exchange type 'foo'"},
		{"declare", xdecl("x", "direct", false, false, false, nil), ""},
		{"redeclare same", xdecl("x", "direct", false, false, false, nil), ""},
		{"type differs", xdecl("x", "fanout", false, false, false, nil),
			"PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'"},
		{"durable differs", xdecl("x", "direct", true, false, false, nil),
			"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'x' in vhost '/': received 'true' but current is 'false'"},
		{"auto_delete differs", xdecl("x", "direct", false, true, false, nil),
			"PRECONDITION_FAILED - inequivalent arg 'auto_delete' for exchange 'x' in vhost '/': received 'true' but current is 'false'"},
		{"internal differs", xdecl("x", "direct", false, false, true, nil),
			"PRECONDITION_FAILED - inequivalent arg 'internal' for exchange 'x' in vhost '/': received 'true' but current is 'false'"},
		{"ae added", xdecl("x", "direct", false, false, false, T{"alternate-exchange": "ae"}),
			"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': received the value 'ae' of type 'longstr' but current is none"},
		{"other args ignored", xdecl("x", "direct", false, false, false, T{"foo": "bar"}), ""},
		{"declare with ae", xdecl("xae", "direct", false, false, false, T{"alternate-exchange": "ae"}), ""},
		{"ae differs", xdecl("xae", "direct", false, false, false, T{"alternate-exchange": "ae2"}),
			"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'xae' in vhost '/': received 'ae2' but current is 'ae'"},
		{"ae dropped", xdecl("xae", "direct", false, false, false, nil),
			"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'xae' in vhost '/': received none but current is the value 'ae' of type 'longstr'"},
		{"ae int on existing", xdecl("xae", "direct", false, false, false, T{"alternate-exchange": int32(5)}),
			"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'xae' in vhost '/': received '5' but current is 'ae'"},
		{"ae int on new", xdecl("xaei", "direct", false, false, false, T{"alternate-exchange": int32(5)}),
			"PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in exchange 'xaei' in vhost '/'"},
		{"passive missing", xpassive("nox"), "NOT_FOUND - no exchange 'nox' in vhost '/'"},
		{"passive ignores type and flags", xpassive("x"), ""},
		{"reserved prefix", xdecl("amq.foo", "direct", false, false, false, nil),
			"ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'"},
		{"redeclare amq.direct", xdecl("amq.direct", "direct", true, false, false, nil), ""},
		{"amq.direct differs", xdecl("amq.direct", "fanout", true, false, false, nil),
			"PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': received 'fanout' but current is 'direct'"},
		{"declare default", xdecl("", "direct", true, false, false, nil), "ACCESS_REFUSED - operation not permitted on the default exchange"},
		{"passive default", xpassive(""), "ACCESS_REFUSED - operation not permitted on the default exchange"},
		{"delete default", xdel("", false), "ACCESS_REFUSED - operation not permitted on the default exchange"},
		{"delete amq.direct", xdel("amq.direct", false), "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"},
		{"delete amq.missing", xdel("amq.nox", false), "ACCESS_REFUSED - deletion of system exchange 'amq.nox' in vhost '/' not allowed"},
		{"delete missing", xdel("nox", false), ""},
		{"declare q", qdecl("q", false, false, false, 1, nil), ""},
		{"bind", bind("x", "q", false, "k", nil, 1), ""},
		{"delete if-unused", xdel("x", true), "PRECONDITION_FAILED - exchange 'x' in vhost '/' in use"},
		{"delete", xdel("x", false), ""},
		{"passive after delete", xpassive("x"), "NOT_FOUND - no exchange 'x' in vhost '/'"},
		{"CR LF stripped", xdecl("a\r\nb", "topic", false, false, false, nil), ""},
		{"stripped name exists", xpassive("ab"), ""},
	})
}

func TestQueueDeclareRules(t *testing.T) {
	runScript(t, New(), []step{
		{"reserved prefix", qdecl("amq.x", false, false, false, 1, nil),
			"ACCESS_REFUSED - queue name 'amq.x' contains reserved prefix 'amq.*'"},
		{"passive missing", qpassive("noq", 1), "NOT_FOUND - no queue 'noq' in vhost '/'"},
		{"declare", qdecl("q", false, false, false, 1, T{"x-message-ttl": int32(100)}), ""},
		{"durable differs", qdecl("q", true, false, false, 1, T{"x-message-ttl": int32(100)}),
			"PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'"},
		{"auto_delete differs", qdecl("q", false, false, true, 1, T{"x-message-ttl": int32(100)}),
			"PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue 'q' in vhost '/': received 'true' but current is 'false'"},
		{"exclusive differs", qdecl("q", false, true, false, 1, T{"x-message-ttl": int32(100)}),
			"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'q' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."},
		{"ttl differs", qdecl("q", false, false, false, 1, T{"x-message-ttl": int32(200)}),
			"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '200' but current is '100'"},
		{"ttl as long is equivalent", qdecl("q", false, false, false, 1, T{"x-message-ttl": int64(100)}), ""},
		{"ttl dropped", qdecl("q", false, false, false, 1, nil),
			"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received none but current is the value '100' of type 'signedint'"},
		{"ttl as string", qdecl("q", false, false, false, 1, T{"x-message-ttl": "100"}),
			"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '100' but current is '100'"},
		{"unknown arg ignored", qdecl("q", false, false, false, 1, T{"x-message-ttl": int32(100), "foo": "x"}), ""},
		{"max-length added", qdecl("q", false, false, false, 1, T{"x-message-ttl": int32(100), "x-max-length": int32(5)}),
			"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received the value '5' of type 'signedint' but current is none"},
		{"passive ignores flags", qpassive("q", 2), ""},
		{"exclusive", qdecl("qe", false, true, false, 1, nil), ""},
		{"exclusive from other connection", qdecl("qe", false, true, false, 2, nil), "RESOURCE_LOCKED - " + lockedText},
		{"passive from other connection", qpassive("qe", 2), "RESOURCE_LOCKED - " + lockedText},
		{"non-exclusive redeclare by owner", qdecl("qe", false, false, false, 1, nil), "RESOURCE_LOCKED - " + lockedText},
		{"passive by owner", qpassive("qe", 1), ""},
		{"exclusive durable is not durable", qdecl("qe", true, true, false, 1, nil), ""},
		{"bind from other connection", bind("amq.direct", "qe", false, "k", nil, 2), "RESOURCE_LOCKED - " + lockedText},
		{"delete from other connection", qdel("qe", 2), "RESOURCE_LOCKED - " + lockedText},
		{"bind by owner", bind("amq.direct", "qe", false, "k", nil, 1), ""},
		{"unbind from other connection", unbind("amq.direct", "qe", false, "k", nil, 2), "RESOURCE_LOCKED - " + lockedText},
		{"unbind nothing from other connection", unbind("amq.direct", "qe", false, "zz", nil, 2), ""},
		{"unbind by owner", unbind("amq.direct", "qe", false, "k", nil, 1), ""},
		{"server-named shape passes the prefix rule", qdecl("amq.gen-AAAAAAAAAAAAAAAAAAAAAA", false, true, false, 1, nil), ""},
		{"redeclare server-named", qdecl("amq.gen-AAAAAAAAAAAAAAAAAAAAAA", false, true, false, 1, nil), ""},
		{"classic explicit", qdecl("c", false, false, false, 1, T{"x-queue-type": "classic"}), ""},
		{"classic implicit is equivalent", qdecl("c", false, false, false, 1, nil), ""},
		{"implicit then explicit", qdecl("q2", false, false, false, 1, nil), ""},
		{"explicit classic on implicit", qdecl("q2", false, false, false, 1, T{"x-queue-type": "classic"}), ""},
		{"args", qdecl("a", false, false, false, 1, T{"x-max-priority": int32(5), "x-single-active-consumer": true, "x-dead-letter-exchange": "a"}), ""},
		{"priority as ubyte", qdecl("a", false, false, false, 1, T{"x-max-priority": uint8(5), "x-single-active-consumer": true, "x-dead-letter-exchange": "a"}), ""},
		{"priority as double", qdecl("a", false, false, false, 1, T{"x-max-priority": float64(5), "x-single-active-consumer": true, "x-dead-letter-exchange": "a"}),
			"PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'a' in vhost '/': received '5.0' but current is '5'"},
		{"sac differs", qdecl("a", false, false, false, 1, T{"x-max-priority": int32(5), "x-single-active-consumer": false, "x-dead-letter-exchange": "a"}),
			"PRECONDITION_FAILED - inequivalent arg 'x-single-active-consumer' for queue 'a' in vhost '/': received 'false' but current is 'true'"},
		{"dlx differs", qdecl("a", false, false, false, 1, T{"x-max-priority": int32(5), "x-single-active-consumer": true, "x-dead-letter-exchange": "b"}),
			"PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'a' in vhost '/': received 'b' but current is 'a'"},
		{"dlx as bytes is equivalent", qdecl("a", false, false, false, 1, T{"x-max-priority": int32(5), "x-single-active-consumer": true, "x-dead-letter-exchange": []byte("a")}), ""},
		{"quorum", qdecl("qq", true, false, false, 1, T{"x-queue-type": "quorum", "x-delivery-limit": int32(3)}), ""},
		{"quorum delivery-limit differs", qdecl("qq", true, false, false, 1, T{"x-queue-type": "quorum", "x-delivery-limit": int32(4)}),
			"PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'qq' in vhost '/': received '4' but current is '3'"},
		{"quorum redeclared as explicit classic", qdecl("qq", true, false, false, 1, T{"x-queue-type": "classic", "x-delivery-limit": int32(3)}),
			"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'qq' in vhost '/': received 'classic' but current is 'quorum'"},
		{"quorum redeclared as classic", qdecl("qq", true, false, false, 1, nil),
			"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'qq' in vhost '/': received none but current is the value 'quorum' of type 'longstr'"},
	})
}

func TestQueueArgumentValidation(t *testing.T) {
	const pf = "PRECONDITION_FAILED - invalid arg '"
	tests := []struct {
		name                  string
		durable, excl, autoDl bool
		args                  T
		want                  string
	}{
		{"ttl -1", false, false, false, T{"x-message-ttl": int32(-1)}, pf + "x-message-ttl' for queue 'a' in vhost '/': {value_negative,-1}"},
		{"ttl str", false, false, false, T{"x-message-ttl": "x"}, pf + `x-message-ttl' for queue 'a' in vhost '/': "expected integer, got longstr"`},
		{"ttl huge", false, false, false, T{"x-message-ttl": int64(1) << 40}, pf + "x-message-ttl' for queue 'a' in vhost '/': {value_too_large,1099511627776}"},
		{"ttl 0", false, false, false, T{"x-message-ttl": int32(0)}, ""},
		{"expires 0", false, false, false, T{"x-expires": int32(0)}, pf + "x-expires' for queue 'a' in vhost '/': {value_zero,0}"},
		{"expires -5", false, false, false, T{"x-expires": int32(-5)}, pf + "x-expires' for queue 'a' in vhost '/': {value_negative,-5}"},
		{"expires ok", false, false, false, T{"x-expires": uint16(500)}, ""},
		{"maxlen -1", false, false, false, T{"x-max-length": int32(-1)}, pf + "x-max-length' for queue 'a' in vhost '/': {value_negative,-1}"},
		{"maxlen str", false, false, false, T{"x-max-length": "abc"}, pf + `x-max-length' for queue 'a' in vhost '/': "expected integer, got longstr"`},
		{"maxlen double", false, false, false, T{"x-max-length": 1.5}, pf + `x-max-length' for queue 'a' in vhost '/': "expected integer, got double"`},
		{"maxlenbytes bool", false, false, false, T{"x-max-length-bytes": true}, pf + `x-max-length-bytes' for queue 'a' in vhost '/': "expected integer, got bool"`},
		{"overflow bad", false, false, false, T{"x-overflow": "foo"}, pf + "x-overflow' for queue 'a' in vhost '/': invalid_overflow"},
		{"overflow int", false, false, false, T{"x-overflow": int32(1)}, pf + "x-overflow' for queue 'a' in vhost '/': {unacceptable_type,signedint}"},
		{"overflow ok", false, false, false, T{"x-overflow": "reject-publish-dlx"}, ""},
		{"dlx int", false, false, false, T{"x-dead-letter-exchange": int32(1)},
			"PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'a' in vhost '/'"},
		{"dlrk int", false, false, false, T{"x-dead-letter-routing-key": int32(1)}, pf + "x-dead-letter-routing-key' for queue 'a' in vhost '/': {unacceptable_type,signedint}"},
		{"dlrk without dlx", false, false, false, T{"x-dead-letter-routing-key": "k"}, pf + "x-dead-letter-routing-key' for queue 'a' in vhost '/': routing_key_but_no_dlx_defined"},
		{"dlx and dlrk", false, false, false, T{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "k"}, ""},
		{"prio 300", false, false, false, T{"x-max-priority": int32(300)}, pf + "x-max-priority' for queue 'a' in vhost '/': {max_value_exceeded,300}"},
		{"prio -1", false, false, false, T{"x-max-priority": int32(-1)}, pf + "x-max-priority' for queue 'a' in vhost '/': {value_negative,-1}"},
		{"prio str", false, false, false, T{"x-max-priority": "x"}, pf + `x-max-priority' for queue 'a' in vhost '/': "expected integer, got longstr"`},
		{"prio 255", false, false, false, T{"x-max-priority": uint8(255)}, ""},
		{"qtype bad", false, false, false, T{"x-queue-type": "foo"}, pf + `x-queue-type' for queue 'a' in vhost '/': "unsupported queue type 'foo'"`},
		{"qtype int", false, false, false, T{"x-queue-type": int32(3)}, pf + "x-queue-type' for queue 'a' in vhost '/': {unacceptable_type,signedint}"},
		{"quorum non-durable", false, false, false, T{"x-queue-type": "quorum"}, "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'a' in vhost '/'"},
		{"quorum exclusive", true, true, false, T{"x-queue-type": "quorum"}, "PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue 'a' in vhost '/'"},
		{"quorum auto-delete", true, false, true, T{"x-queue-type": "quorum"}, "PRECONDITION_FAILED - invalid property 'auto-delete' for queue 'a' in vhost '/'"},
		{"stream non-durable", false, false, false, T{"x-queue-type": "stream"}, "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'a' in vhost '/'"},
		{"quorum with priority", true, false, false, T{"x-queue-type": "quorum", "x-max-priority": int32(3)},
			pf + "x-max-priority' for queue 'a' in vhost '/' of queue type rabbit_quorum_queue"},
		{"quorum with priority, non-durable: arguments first", false, false, false, T{"x-queue-type": "quorum", "x-max-priority": int32(1)},
			pf + "x-max-priority' for queue 'a' in vhost '/' of queue type rabbit_quorum_queue"},
		{"quorum reject-publish-dlx", true, false, false, T{"x-queue-type": "quorum", "x-overflow": "reject-publish-dlx"}, ""},
		{"ttl double", false, false, false, T{"x-message-ttl": 1.5}, pf + `x-message-ttl' for queue 'a' in vhost '/': "expected integer, got double"`},
		{"expires float", false, false, false, T{"x-expires": float32(2)}, pf + `x-expires' for queue 'a' in vhost '/': "expected integer, got float"`},
		{"quorum ok", true, false, false, T{"x-queue-type": "quorum", "x-delivery-limit": int32(5)}, ""},
		{"stream max-age", true, false, false, T{"x-queue-type": "stream", "x-max-age": "7D"}, ""},
		{"stream max-age bad", true, false, false, T{"x-queue-type": "stream", "x-max-age": "7X"}, pf + "x-max-age' for queue 'a' in vhost '/': invalid_max_age"},
		{"classic with delivery-limit", false, false, false, T{"x-delivery-limit": int32(5)},
			pf + "x-delivery-limit' for queue 'a' in vhost '/' of queue type rabbit_classic_queue"},
		{"qmode bad", false, false, false, T{"x-queue-mode": "foo"}, pf + `x-queue-mode' for queue 'a' in vhost '/': "unsupported queue mode 'foo'"`},
		{"qversion 3", false, false, false, T{"x-queue-version": int32(3)}, pf + `x-queue-version' for queue 'a' in vhost '/': "unsupported queue version '3'"`},
		{"sac str", false, false, false, T{"x-single-active-consumer": "foo"}, pf + "x-single-active-consumer' for queue 'a' in vhost '/': {unacceptable_type,longstr}"},
		{"sac ok", false, false, false, T{"x-single-active-consumer": true}, ""},
		{"unknown args ok", false, false, false, T{"foo": "bar", "x-custom": int32(1)}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runScript(t, New(), []step{{tc.name, qdecl("a", tc.durable, tc.excl, tc.autoDl, 1, tc.args), tc.want}})
		})
	}
}

func TestBindRules(t *testing.T) {
	runScript(t, New(), []step{
		{"declare q", qdecl("q", false, false, false, 1, nil), ""},
		{"declare x", xdecl("x", "direct", false, false, false, nil), ""},
		{"missing queue", bind("amq.direct", "noq", false, "k", nil, 1), "NOT_FOUND - no queue 'noq' in vhost '/'"},
		{"missing exchange", bind("nox", "q", false, "k", nil, 1), "NOT_FOUND - no exchange 'nox' in vhost '/'"},
		{"missing both", bind("nox", "noq", false, "k", nil, 1), "NOT_FOUND - no exchange 'nox' in vhost '/'"},
		{"bind to default", bind("", "q", false, "k", nil, 1), "ACCESS_REFUSED - operation not permitted on the default exchange"},
		{"unbind default", unbind("", "q", false, "k", nil, 1), "ACCESS_REFUSED - operation not permitted on the default exchange"},
		{"unbind nonexistent", unbind("amq.direct", "q", false, "zz", nil, 1), ""},
		{"unbind missing queue", unbind("amq.direct", "noq", false, "zz", nil, 1), ""},
		{"unbind missing exchange", unbind("nox", "q", false, "zz", nil, 1), ""},
		{"headers bad x-match", bind("amq.headers", "q", false, "", T{"x-match": "foo"}, 1),
			`PRECONDITION_FAILED - Invalid x-match field value <<"foo">>; expected all, any, all-with-x, or any-with-x`},
		{"headers int x-match", bind("amq.headers", "q", false, "", T{"x-match": int32(1)}, 1),
			"PRECONDITION_FAILED - Invalid x-match field type signedint (value 1); expected longstr"},
		{"x-match on a direct exchange is not checked", bind("amq.direct", "q", false, "", T{"x-match": "foo"}, 1), ""},
		{"e2e missing dest", bind("amq.direct", "nox", true, "k", nil, 1), "NOT_FOUND - no exchange 'nox' in vhost '/'"},
		{"e2e missing source", bind("nox", "amq.direct", true, "k", nil, 1), "NOT_FOUND - no exchange 'nox' in vhost '/'"},
		{"e2e to default", bind("amq.direct", "", true, "k", nil, 1), "ACCESS_REFUSED - operation not permitted on the default exchange"},
		{"e2e from default", bind("", "amq.direct", true, "k", nil, 1), "ACCESS_REFUSED - operation not permitted on the default exchange"},
		{"e2e unbind nonexistent", unbind("amq.direct", "amq.fanout", true, "k", nil, 1), ""},
		{"bind", bind("x", "q", false, "k", nil, 1), ""},
		{"bind twice", bind("x", "q", false, "k", nil, 1), ""},
		{"e2e bind", bind("x", "amq.fanout", true, "k", nil, 1), ""},
	})
}

func TestRouterFollowsState(t *testing.T) {
	s := New()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(qdecl("q1", false, false, false, 1, nil)(s))
	must(qdecl("q2", false, false, false, 1, nil)(s))
	must(xdecl("ae", "fanout", false, false, false, nil)(s))
	must(xdecl("main", "direct", false, false, false, T{"alternate-exchange": "ae"})(s))
	must(bind("main", "q1", false, "k", nil, 1)(s))
	must(bind("ae", "q2", false, "", nil, 1)(s))
	r := s.Router("/")
	if got := r.Route("main", "k", nil, nil); !slices.Equal(got, []string{"q1"}) {
		t.Fatalf("main/k -> %v", got)
	}
	if got := r.Route("main", "other", nil, nil); !slices.Equal(got, []string{"q2"}) {
		t.Fatalf("main/other (via AE) -> %v", got)
	}
	if info, ok := r.Exchange("amq.rabbitmq.trace"); !ok || !info.Internal || info.Type != exchange.Topic {
		t.Fatalf("amq.rabbitmq.trace = %+v, %v", info, ok)
	}
	must(qdel("q1", 1)(s))
	if got := s.Router("/").Route("main", "k", nil, nil); !slices.Equal(got, []string{"q2"}) {
		t.Fatalf("after deleting q1, main/k -> %v", got)
	}
	if got := r.Route("main", "k", nil, nil); !slices.Equal(got, []string{"q1"}) {
		t.Fatalf("an old snapshot changed: %v", got)
	}
	if bs := s.Bindings("/"); len(bs) != 1 || bs[0].Source != "ae" {
		t.Fatalf("bindings = %+v", bs)
	}
}

func TestAutoDeleteExchanges(t *testing.T) {
	s := New()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(qdecl("q", false, false, false, 1, nil)(s))
	must(qdecl("q2", false, false, false, 1, nil)(s))
	must(xdecl("ad", "fanout", false, true, false, nil)(s))
	must(xdecl("ad2", "fanout", false, true, false, nil)(s)) // bound only to ad
	must(xdecl("never", "fanout", false, true, false, nil)(s))
	must(bind("ad", "q", false, "", nil, 1)(s))
	must(bind("ad", "q2", false, "", nil, 1)(s))
	must(bind("ad2", "ad", true, "", nil, 1)(s))

	must(unbind("ad", "q2", false, "", nil, 1)(s))
	if _, ok := s.Exchange("/", "ad"); !ok {
		t.Fatal("ad deleted while it still had a binding")
	}
	must(qdel("q", 1)(s)) // ad's last binding goes: ad goes, so ad2's binding to it goes, so ad2 goes
	for _, name := range []string{"ad", "ad2"} {
		if _, ok := s.Exchange("/", name); ok {
			t.Errorf("auto-delete exchange %q survived losing its last binding", name)
		}
	}
	if _, ok := s.Exchange("/", "never"); !ok {
		t.Error("an auto-delete exchange that never had a binding was deleted")
	}
	// Unbind of the last binding also auto-deletes.
	must(xdecl("ad3", "direct", false, true, false, nil)(s))
	must(bind("ad3", "q2", false, "k", nil, 1)(s))
	must(unbind("ad3", "q2", false, "k", nil, 1)(s))
	if _, ok := s.Exchange("/", "ad3"); ok {
		t.Error("ad3 survived its last unbind")
	}
}

func TestConnectionClosed(t *testing.T) {
	s := New()
	for _, st := range []func(*State) error{
		qdecl("e1", false, true, false, 7, nil),
		qdecl("e2", true, true, false, 7, nil),
		qdecl("other", false, true, false, 8, nil),
		qdecl("shared", false, false, false, 7, nil),
		xdecl("ad", "fanout", false, true, false, nil),
		bind("ad", "e1", false, "", nil, 7),
	} {
		if err := st(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddVHost("v2"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.DeclareQueue(QueueDef{VHost: "v2", Name: "e3", Exclusive: true, Owner: 7}, false); err != nil {
		t.Fatal(err)
	}
	gone := s.ConnectionClosed(7)
	var names []string
	for _, q := range gone {
		names = append(names, q.VHost+"/"+q.Name)
		if q.Durable {
			t.Errorf("exclusive queue %s stored as durable", q.Name)
		}
	}
	if !slices.Equal(names, []string{"//e1", "//e2", "v2/e3"}) {
		t.Fatalf("deleted %v", names)
	}
	for _, n := range []string{"other", "shared"} {
		if _, ok := s.Queue("/", n); !ok {
			t.Errorf("queue %s deleted", n)
		}
	}
	if _, ok := s.Exchange("/", "ad"); ok {
		t.Error("auto-delete exchange bound only to an exclusive queue survived")
	}
	if len(s.ConnectionClosed(7)) != 0 {
		t.Error("second ConnectionClosed deleted more")
	}
}

func TestVHostsAndPredeclared(t *testing.T) {
	s := New()
	if !s.HasVHost("/") {
		t.Fatal("no default vhost")
	}
	var names []string
	for _, x := range s.Exchanges("/") {
		names = append(names, x.Name)
		if !x.Durable {
			t.Errorf("predeclared %q not durable", x.Name)
		}
	}
	want := []string{"", "amq.direct", "amq.fanout", "amq.headers", "amq.match", "amq.rabbitmq.trace", "amq.topic"}
	if !slices.Equal(names, want) {
		t.Fatalf("predeclared %v, want %v", names, want)
	}
	if err := s.AddVHost("/"); !errors.Is(err, ErrVHostExists) {
		t.Fatalf("AddVHost twice: %v", err)
	}
	if err := s.DeleteVHost("nope"); !errors.Is(err, ErrNoVHost) {
		t.Fatalf("DeleteVHost missing: %v", err)
	}
	if err := s.AddVHost("v"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeclareExchange(ExchangeDef{VHost: "v", Name: "x", Type: "topic"}, false); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Exchange("/", "x"); ok {
		t.Fatal("exchange leaked across vhosts")
	}
	if err := s.DeleteVHost("v"); err != nil || s.HasVHost("v") {
		t.Fatalf("DeleteVHost: %v", err)
	}
	_, err := s.DeclareExchange(ExchangeDef{VHost: "v", Name: "x", Type: "topic"}, false)
	var me *Error
	if !errors.As(err, &me) || me.Code != NotAllowed {
		t.Fatalf("declare in a deleted vhost: %v", err)
	}
}

func TestServerNamedQueue(t *testing.T) {
	var r [16]byte
	for i := range r {
		r[i] = byte(i * 17)
	}
	name := ServerNamedQueue(r)
	if !strings.HasPrefix(name, "amq.gen-") || len(name) != 30 || strings.ContainsAny(name, "+/=") {
		t.Fatalf("ServerNamedQueue = %q", name)
	}
	if err := ServerNamedAllowed(T{"x-queue-type": "quorum"}); err == nil ||
		err.Error() != "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_quorum_queue" {
		t.Fatalf("ServerNamedAllowed(quorum) = %v", err)
	}
	if err := ServerNamedAllowed(nil); err != nil {
		t.Fatal(err)
	}
	s := New()
	if _, _, err := s.DeclareQueue(QueueDef{VHost: "/", Name: "amq.gen-x", ServerNamed: true}, false); err != nil {
		t.Fatalf("ServerNamed queue refused: %v", err)
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		code uint16
		name string
		conn bool
	}{
		{AccessRefused, "ACCESS_REFUSED", false}, {NotFound, "NOT_FOUND", false}, {ResourceLocked, "RESOURCE_LOCKED", false},
		{PreconditionFailed, "PRECONDITION_FAILED", false}, {FrameError, "FRAME_ERROR", true}, {SyntaxError, "SYNTAX_ERROR", true},
		{CommandInvalid, "COMMAND_INVALID", true}, {ChannelError, "CHANNEL_ERROR", true}, {UnexpectedFrame, "UNEXPECTED_FRAME", true},
		{ResourceError, "RESOURCE_ERROR", true}, {NotAllowed, "NOT_ALLOWED", true}, {NotImplemented, "NOT_IMPLEMENTED", true},
		{InternalError, "INTERNAL_ERROR", true},
	}
	for _, tc := range tests {
		if got := CodeName(tc.code); got != tc.name {
			t.Errorf("CodeName(%d) = %q", tc.code, got)
		}
		if got := IsConnectionError(tc.code); got != tc.conn {
			t.Errorf("IsConnectionError(%d) = %v", tc.code, got)
		}
	}
	if got := Errorf(NotFound, "no queue '%s' in vhost '%s'", "x", "/").Error(); got != "NOT_FOUND - no queue 'x' in vhost '/'" {
		t.Errorf("Error() = %q", got)
	}
}

// Every incarnation of a durable queue gets a raft group of its own, recorded in the snapshot
// so a restart finds it, and the counter survives a restore: a queue deleted and declared again
// never reuses its predecessor's group. Transient queues have none.
func TestDurableQueueGroupPerIncarnation(t *testing.T) {
	s := New()
	declare := func(s *State, name string, durable bool) QueueDef {
		t.Helper()
		q, created, err := s.DeclareQueue(QueueDef{VHost: "/", Name: name, Durable: durable, Group: 7}, false)
		if err != nil || !created {
			t.Fatalf("declare %s: created %v, %v", name, created, err)
		}
		return q
	}
	a := declare(s, "a", true)
	b := declare(s, "b", true)
	tr := declare(s, "t", false)
	if a.Group < QueueGroupBase || b.Group < QueueGroupBase || a.Group == b.Group || tr.Group != 0 {
		t.Fatalf("groups: a %d, b %d, transient %d", a.Group, b.Group, tr.Group)
	}
	if q, _, _ := s.DeclareQueue(QueueDef{VHost: "/", Name: "a", Durable: true}, false); q.Group != a.Group {
		t.Fatalf("an equivalent redeclare changed the group: %d, was %d", q.Group, a.Group)
	}
	if _, err := s.DeleteQueue("/", "a", 0); err != nil {
		t.Fatal(err)
	}
	a2 := declare(s, "a", true)
	if a2.Group == a.Group || a2.Group == b.Group {
		t.Fatalf("redeclared queue reuses a group: %d (a was %d, b is %d)", a2.Group, a.Group, b.Group)
	}

	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Restore(snap)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []QueueDef{a2, b} {
		if got, ok := r.Queue("/", want.Name); !ok || got.Group != want.Group {
			t.Fatalf("restored %s: group %d, want %d", want.Name, got.Group, want.Group)
		}
	}
	if _, err := r.DeleteQueue("/", "b", 0); err != nil {
		t.Fatal(err)
	}
	b2 := declare(r, "b", true)
	for _, old := range []uint64{a.Group, b.Group, a2.Group} {
		if b2.Group == old {
			t.Fatalf("after a restore, a redeclared queue got the used group %d", old)
		}
	}
}

// A spread queue's placement (QueueDef.Place) is part of its record: it reaches another node's
// record set with the change that set it, survives a snapshot, and a client's declaration
// cannot set it.
func TestQueuePlaceRecorded(t *testing.T) {
	s := New()
	q, _, err := s.DeclareQueue(QueueDef{VHost: "/", Name: "q", Durable: true, Place: 9}, false)
	if err != nil || q.Place != 0 {
		t.Fatalf("declare: place %d, %v (a declaration must not choose the placement)", q.Place, err)
	}
	if q, err = s.SetQueuePlace("/", "q", 3); err != nil || q.Place != 3 {
		t.Fatalf("set place: %+v, %v", q, err)
	}
	if _, err := s.SetQueuePlace("/", "nope", 3); err == nil {
		t.Fatal("placing a missing queue did not fail")
	}
	cs, err := s.TakeChanges()
	if err != nil {
		t.Fatal(err)
	}
	rs := NewRecordSet()
	if _, err := rs.ApplyEntry(EncodeChanges(cs)); err != nil {
		t.Fatal(err)
	}
	other, err := rs.State()
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := other.Queue("/", "q"); !ok || got.Place != 3 || got.Group != q.Group {
		t.Fatalf("replicated record: %+v, want place 3 group %d", got, q.Group)
	}
	if qs, err := rs.DurableQueues(); err != nil || len(qs) != 1 || qs[0].Place != 3 {
		t.Fatalf("durable queues of the records: %+v, %v", qs, err)
	}
	snap, err := other.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Restore(snap)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Queue("/", "q"); got.Place != 3 {
		t.Fatalf("after a snapshot: place %d, want 3", got.Place)
	}
}
