package exchange

import (
	"strings"

	"github.com/parleymq/parley/broker/message"
)

// Headers exchange matching, as rabbit_exchange_type_headers:headers_match does it.
//
// The binding's "x-match" argument chooses all (the default, also for any value RabbitMQ
// does not know: "legacy; we didn't validate"), any, all-with-x or any-with-x. The binding's
// other arguments are the pattern; "x-match" itself never is, and other x- prefixed arguments
// are ignored unless the mode ends in -with-x. A pattern argument of type void matches on the
// header's presence alone; any other compares values as Erlang's == does (headerValuesMatch).
// With all, a binding with nothing left to compare matches every message; with any, none.

type hpair struct {
	key  string
	void bool
	val  any
}

type hbinding struct {
	entry
	any   bool
	pairs []hpair
}

func compileHeaders(e entry) hbinding {
	h := hbinding{entry: e}
	withX := false
	if v, ok := e.args["x-match"].(string); ok {
		switch v {
		case "any":
			h.any = true
		case "all-with-x":
			withX = true
		case "any-with-x":
			h.any, withX = true, true
		}
	}
	for k, v := range e.args {
		if k == "x-match" || (!withX && strings.HasPrefix(k, "x-")) {
			continue
		}
		h.pairs = append(h.pairs, hpair{key: k, void: v == nil, val: v})
	}
	return h
}

func (h *hbinding) matches(headers message.Table) bool {
	if h.any {
		for i := range h.pairs {
			p := &h.pairs[i]
			if v, ok := headers[p.key]; ok && (p.void || headerValuesMatch(p.val, v)) {
				return true
			}
		}
		return false
	}
	for i := range h.pairs {
		p := &h.pairs[i]
		v, ok := headers[p.key]
		if !ok || (!p.void && !headerValuesMatch(p.val, v)) {
			return false
		}
	}
	return true
}
