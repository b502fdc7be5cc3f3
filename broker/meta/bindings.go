package meta

import (
	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
)

// Bind handles queue.bind and exchange.bind (rabbit_channel:binding_action, then
// rabbit_binding:add): neither end may be the default exchange (403); the source exchange,
// then the destination, must exist (404); a headers exchange checks x-match (406); a queue
// destination must not be another connection's exclusive queue (405). Binding twice is a
// no-op. owner is the calling connection.
func (s *State) Bind(b BindingDef, owner uint64) error {
	v, err := s.vhost(b.VHost)
	if err != nil {
		return err
	}
	b.Source, b.Dest.Name = stripCRLF(b.Source), stripCRLF(b.Dest.Name)
	if (b.Dest.Exchange && b.Dest.Name == "") || b.Source == "" {
		return defaultExchangeRefused()
	}
	src, ok := v.exchanges[b.Source]
	if !ok {
		return notFound("exchange", b.Source, v.name)
	}
	if err := v.checkDest(b.Dest, owner); err != nil {
		return err
	}
	if src.Type == "headers" {
		if err := validateHeadersBinding(b.Args); err != nil {
			return err
		}
	}
	eb := exchange.Binding{Source: b.Source, Dest: b.Dest, Key: b.Key, Args: b.Args}
	if v.router.HasBinding(eb) {
		return nil // binding twice changes nothing (and writes nothing)
	}
	v.router = v.router.WithBinding(eb)
	v.touchBinding(eb)
	return nil
}

func (v *vhost) checkDest(d exchange.Dest, owner uint64) error {
	if d.Exchange {
		if _, ok := v.exchanges[d.Name]; !ok {
			return notFound("exchange", d.Name, v.name)
		}
		return nil
	}
	q, ok := v.queues[d.Name]
	if !ok {
		return notFound("queue", d.Name, v.name)
	}
	if q.Exclusive && q.Owner != owner {
		return lockedQueue(d.Name, v.name)
	}
	return nil
}

// validateHeadersBinding is rabbit_exchange_type_headers:validate_binding/2.
func validateHeadersBinding(args message.Table) error {
	v, ok := args["x-match"]
	if !ok {
		return nil
	}
	s, isStr := v.(string)
	if !isStr {
		return Errorf(PreconditionFailed, "Invalid x-match field type %s (value %s); expected longstr",
			message.TypeName(v), erlangValue(v))
	}
	switch s {
	case "all", "any", "all-with-x", "any-with-x":
		return nil
	}
	return Errorf(PreconditionFailed, "Invalid x-match field value %s; expected all, any, all-with-x, or any-with-x",
		erlangBinary(s))
}

// Unbind handles queue.unbind and exchange.unbind. The default exchange is refused (403) as
// for Bind; a missing source, destination or binding is not an error (RabbitMQ 3.x answers
// unbind-ok). An auto-delete source left without bindings is deleted.
func (s *State) Unbind(b BindingDef, owner uint64) error {
	v, err := s.vhost(b.VHost)
	if err != nil {
		return err
	}
	b.Source, b.Dest.Name = stripCRLF(b.Source), stripCRLF(b.Dest.Name)
	if (b.Dest.Exchange && b.Dest.Name == "") || b.Source == "" {
		return defaultExchangeRefused()
	}
	eb := exchange.Binding{Source: b.Source, Dest: b.Dest, Key: b.Key, Args: b.Args}
	if !v.router.HasBinding(eb) {
		// RabbitMQ 3.x: binding_not_found is not an error, and is found before the
		// exclusivity check (unbinding nothing from another's exclusive queue is ok).
		return nil
	}
	if q, ok := v.queues[b.Dest.Name]; !b.Dest.Exchange && ok && q.Exclusive && q.Owner != owner {
		return lockedQueue(q.Name, v.name)
	}
	v.touchBinding(eb)
	v.router = v.router.WithoutBinding(eb)
	v.maybeAutoDelete(b.Source)
	return nil
}
