package meta

import (
	"strconv"
	"strings"

	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
)

// putExchange stores d and tells the router.
func (v *vhost) putExchange(d ExchangeDef) {
	v.exchanges[d.Name] = d
	if d.Durable {
		v.s.touch(recordRef{kind: recExchange, vhost: v.name, name: d.Name})
	}
	if d.Name == "" {
		return // the router routes the default exchange by name
	}
	t, _ := exchange.ParseType(d.Type)
	ae, _ := d.Args["alternate-exchange"].(string)
	v.router = v.router.WithExchange(exchange.ExchangeInfo{Name: d.Name, Type: t, Internal: d.Internal,
		AlternateExchange: ae})
}

// DeclareExchange handles exchange.declare, in rabbit_channel's order: the type, the default
// exchange, then either equivalence with the existing exchange or, for a new one, the reserved
// "amq." prefix and the alternate-exchange argument. passive only checks existence (and does
// not look at the type). It returns the exchange as it now is.
func (s *State) DeclareExchange(d ExchangeDef, passive bool) (ExchangeDef, error) {
	v, err := s.vhost(d.VHost)
	if err != nil {
		return ExchangeDef{}, err
	}
	d.Name = stripCRLF(d.Name)
	if passive {
		if d.Name == "" {
			return ExchangeDef{}, defaultExchangeRefused()
		}
		x, ok := v.exchanges[d.Name]
		if !ok {
			return ExchangeDef{}, notFound("exchange", d.Name, v.name)
		}
		return x, nil
	}
	if _, ok := exchange.ParseType(d.Type); !ok {
		// RabbitMQ: an x- type names a plugin that is not enabled; anything else is invalid.
		if strings.HasPrefix(d.Type, "x-") {
			return ExchangeDef{}, Errorf(CommandInvalid, "unknown exchange type '%s'", d.Type)
		}
		return ExchangeDef{}, Errorf(CommandInvalid, "invalid exchange type '%s'", d.Type)
	}
	if d.Name == "" {
		return ExchangeDef{}, defaultExchangeRefused()
	}
	if x, ok := v.exchanges[d.Name]; ok {
		return x, exchangeEquivalent(x, d)
	}
	if strings.HasPrefix(d.Name, "amq.") {
		return ExchangeDef{}, Errorf(AccessRefused, "exchange name '%s' contains reserved prefix 'amq.*'", d.Name)
	}
	if ae, ok := d.Args["alternate-exchange"]; ok {
		if _, isStr := ae.(string); !isStr {
			return ExchangeDef{}, Errorf(PreconditionFailed, "invalid type '%s' for arg 'alternate-exchange' in %s",
				message.TypeName(ae), rs("exchange", d.Name, v.name))
		}
	}
	v.putExchange(d)
	return d, nil
}

// exchangeEquivalent is rabbit_exchange:assert_equivalence/6: the type and the flags must
// match, and of the arguments only "alternate-exchange" is compared.
func exchangeEquivalent(cur, req ExchangeDef) error {
	res := rs("exchange", cur.Name, cur.VHost)
	if cur.Type != req.Type {
		return inequivalent("type", res, "'"+req.Type+"'", "'"+cur.Type+"'")
	}
	if err := flagEquivalent("durable", res, cur.Durable, req.Durable); err != nil {
		return err
	}
	if err := flagEquivalent("auto_delete", res, cur.AutoDelete, req.AutoDelete); err != nil {
		return err
	}
	if err := flagEquivalent("internal", res, cur.Internal, req.Internal); err != nil {
		return err
	}
	return argEquivalent("alternate-exchange", res, cur.Args, req.Args)
}

func inequivalent(key, res, received, current string) *Error {
	return Errorf(PreconditionFailed, "inequivalent arg '%s' for %s: received %s but current is %s",
		key, res, received, current)
}

func flagEquivalent(key, res string, cur, req bool) error {
	if cur == req {
		return nil
	}
	return inequivalent(key, res, "'"+strconv.FormatBool(req)+"'", "'"+strconv.FormatBool(cur)+"'")
}

// argEquivalent is rabbit_misc:assert_args_equivalence1/4 for one key.
func argEquivalent(key, res string, cur, req map[string]any) error {
	cv, cok := cur[key]
	rv, rok := req[key]
	switch {
	case !cok && !rok:
		return nil
	case cok && rok:
		if message.TypeName(cv) == message.TypeName(rv) && exchange.TablesEqual(map[string]any{key: cv}, map[string]any{key: rv}) {
			return nil
		}
		if typeClass(cv) == typeClass(rv) && erlangEqual(cv, rv) {
			return nil
		}
		if erlangIdentical(cv, rv) {
			return nil
		}
		return inequivalent(key, res, valText(rv), valText(cv))
	}
	// One side is missing. Classic queues need not carry x-queue-type (rabbitmq-common#341).
	if key == "x-queue-type" {
		if s, ok := cv.(string); cok && ok && s == "classic" {
			return nil
		}
		if s, ok := rv.(string); rok && ok && s == "classic" {
			return nil
		}
	}
	return inequivalent(key, res, typedValText(rv, rok), typedValText(cv, cok))
}

// DeleteExchange handles exchange.delete. Deleting an exchange that does not exist succeeds
// (RabbitMQ 3.x). ifUnused refuses while the exchange is the source of a binding. The
// exchange's bindings go with it, and auto-delete exchanges left without bindings follow.
func (s *State) DeleteExchange(vhost, name string, ifUnused bool) error {
	v, err := s.vhost(vhost)
	if err != nil {
		return err
	}
	name = stripCRLF(name)
	if name == "" {
		return defaultExchangeRefused()
	}
	if strings.HasPrefix(name, "amq.") {
		return Errorf(AccessRefused, "deletion of system %s not allowed", rs("exchange", name, v.name))
	}
	if _, ok := v.exchanges[name]; !ok {
		return nil
	}
	if ifUnused && v.router.HasBindings(name) {
		return Errorf(PreconditionFailed, "%s in use", rs("exchange", name, v.name))
	}
	v.deleteExchange(name)
	return nil
}

// deleteExchange removes an exchange with its bindings as source and destination, then lets
// the sources of the latter auto-delete.
func (v *vhost) deleteExchange(name string) {
	sources := v.router.BindingsTo(exchange.Dest{Name: name, Exchange: true})
	if x := v.exchanges[name]; x.Durable {
		v.s.touch(recordRef{kind: recExchange, vhost: v.name, name: name})
		for _, b := range sources {
			v.touchBinding(b)
		}
		for _, b := range v.router.BindingsFrom(name) {
			v.touchBinding(b)
		}
	}
	delete(v.exchanges, name)
	v.router = v.router.WithoutExchange(name)
	for _, b := range sources {
		v.maybeAutoDelete(b.Source)
	}
}

// maybeAutoDelete deletes an auto-delete exchange once it is no longer the source of any
// binding (RabbitMQ: rabbit_exchange:maybe_auto_delete after a binding removal).
func (v *vhost) maybeAutoDelete(name string) {
	x, ok := v.exchanges[name]
	if !ok || !x.AutoDelete || v.router.HasBindings(name) {
		return
	}
	v.deleteExchange(name)
}
