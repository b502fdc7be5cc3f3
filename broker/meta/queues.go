package meta

import (
	"sort"
	"strings"

	"github.com/parleymq/parley/broker/exchange"
	"github.com/parleymq/parley/broker/message"
)

// DeclareQueue handles queue.declare for a named queue (the caller names server-named queues
// with ServerNamedQueue and sets ServerNamed). d.Owner is the declaring connection.
//
// passive: the queue must exist (404) and, if exclusive, belong to d.Owner (405). Otherwise,
// in rabbit_channel's order: the reserved "amq." prefix (403, even when the queue exists); for
// an existing queue, equivalence (exclusivity 405, then durable, auto_delete and the queue
// type's arguments 406); for a new queue, the x-dead-letter-exchange type, the arguments and
// the queue type's constraints (406). created reports whether the queue is new.
func (s *State) DeclareQueue(d QueueDef, passive bool) (q QueueDef, created bool, err error) {
	v, err := s.vhost(d.VHost)
	if err != nil {
		return QueueDef{}, false, err
	}
	d.Name = stripCRLF(d.Name)
	if passive {
		q, ok := v.queues[d.Name]
		if !ok {
			return QueueDef{}, false, notFound("queue", d.Name, v.name)
		}
		if q.Exclusive && q.Owner != d.Owner {
			return QueueDef{}, false, lockedQueue(q.Name, v.name)
		}
		return q, false, nil
	}
	if d.Name == "" {
		return QueueDef{}, false, Errorf(InternalError, "queue.declare: the broker must name server-named queues")
	}
	if strings.HasPrefix(d.Name, "amq.") && !d.ServerNamed && !serverNamedShape(d.Name) {
		return QueueDef{}, false, Errorf(AccessRefused, "queue name '%s' contains reserved prefix 'amq.*'", d.Name)
	}
	// RabbitMQ: Durable = DurableDeclare andalso not ExclusiveDeclare; Owner only if exclusive.
	if d.Exclusive {
		d.Durable = false
	} else {
		d.Owner = 0
	}
	res := rs("queue", d.Name, v.name)
	if cur, ok := v.queues[d.Name]; ok {
		return cur, false, queueEquivalent(cur, d, res)
	}
	if dlx, ok := d.Args["x-dead-letter-exchange"]; ok {
		if _, isStr := dlx.(string); !isStr {
			return QueueDef{}, false, Errorf(PreconditionFailed,
				"invalid type '%s' for arg 'x-dead-letter-exchange' in %s", message.TypeName(dlx), res)
		}
	}
	if err := checkDeclareArgs(res, d.Args); err != nil {
		return QueueDef{}, false, err
	}
	if qt := queueType(d.Args); qt != typeClassic {
		// rabbit_queue_type_util: check_auto_delete, check_exclusive, check_non_durable.
		var prop string
		switch {
		case d.AutoDelete:
			prop = "auto-delete"
		case d.Exclusive:
			prop = "exclusive-owner"
		case !d.Durable:
			prop = "non-durable"
		}
		if prop != "" {
			return QueueDef{}, false, Errorf(PreconditionFailed, "invalid property '%s' for %s", prop, res)
		}
	}
	d.VHost = v.name
	d.Group = 0
	d.Packed = false
	if !d.Durable || !IsPartitionGroup(d.Partition) {
		d.Partition = 0
	}
	d.Place = 0 // the broker places the queue (SetQueuePlace)
	if d.Durable {
		s.groupSeq++
		d.Group = QueueGroupBase + s.groupSeq
		s.touch(recordRef{kind: recGroupSeq})
		s.touch(recordRef{kind: recQueue, vhost: v.name, name: d.Name})
	}
	v.queues[d.Name] = d
	return d, true, nil
}

// ServerNamedAllowed checks that a queue.declare with an empty name may proceed: RabbitMQ
// names only classic queues itself.
func ServerNamedAllowed(args message.Table) error {
	if qt := queueType(args); qt != typeClassic {
		return Errorf(PreconditionFailed, "Cannot declare a server-named queue for type %s", qt)
	}
	return nil
}

// queueEquivalent is rabbit_amqqueue:assert_equivalence/5 with its strict exclusivity check.
func queueEquivalent(cur, req QueueDef, res string) error {
	if cur.Owner != req.Owner {
		return lockedQueue(cur.Name, cur.VHost)
	}
	if err := flagEquivalent("durable", res, cur.Durable, req.Durable); err != nil {
		return err
	}
	if err := flagEquivalent("auto_delete", res, cur.AutoDelete, req.AutoDelete); err != nil {
		return err
	}
	for _, k := range queueTypeArgs[queueType(cur.Args)] {
		if err := argEquivalent(k, res, cur.Args, req.Args); err != nil {
			return err
		}
	}
	return nil
}

// SetQueuePlace records node as the placement of a durable queue (QueueDef.Place) and returns
// the queue's definition with it. Not found: 404.
func (s *State) SetQueuePlace(vhost, name string, node uint64) (QueueDef, error) {
	v, err := s.vhost(vhost)
	if err != nil {
		return QueueDef{}, err
	}
	q, ok := v.queues[name]
	if !ok {
		return QueueDef{}, notFound("queue", name, v.name)
	}
	if q.Place != node {
		q.Place = node
		v.queues[name] = q
		if q.Durable {
			s.touch(recordRef{kind: recQueue, vhost: v.name, name: name})
		}
	}
	return q, nil
}

// DeleteQueue removes a queue and its bindings; auto-delete exchanges left without bindings
// go too. owner is the calling connection: an exclusive queue of another connection is
// locked (405). A missing queue is 404 (the broker answers delete-ok for it, as RabbitMQ
// 3.x does, before calling this). if-unused and if-empty are the broker's checks.
func (s *State) DeleteQueue(vhost, name string, owner uint64) (QueueDef, error) {
	v, err := s.vhost(vhost)
	if err != nil {
		return QueueDef{}, err
	}
	name = stripCRLF(name)
	q, ok := v.queues[name]
	if !ok {
		return QueueDef{}, notFound("queue", name, v.name)
	}
	if q.Exclusive && q.Owner != owner {
		return QueueDef{}, lockedQueue(name, v.name)
	}
	v.deleteQueue(name)
	return q, nil
}

func (v *vhost) deleteQueue(name string) {
	d := exchange.Dest{Name: name}
	bs := v.router.BindingsTo(d)
	if q := v.queues[name]; q.Durable {
		v.s.touch(recordRef{kind: recQueue, vhost: v.name, name: name})
		for _, b := range bs {
			v.touchBinding(b)
		}
	}
	delete(v.queues, name)
	v.router = v.router.WithoutDest(d)
	for _, b := range bs {
		v.maybeAutoDelete(b.Source)
	}
}

// ConnectionClosed deletes the exclusive queues of a closed connection, in every vhost, and
// returns them ordered by vhost and name.
func (s *State) ConnectionClosed(owner uint64) []QueueDef {
	if owner == 0 {
		return nil
	}
	var out []QueueDef
	for _, v := range s.vhosts {
		for _, q := range v.queues {
			if q.Exclusive && q.Owner == owner {
				out = append(out, q)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].VHost != out[j].VHost {
			return out[i].VHost < out[j].VHost
		}
		return out[i].Name < out[j].Name
	})
	for _, q := range out {
		s.vhosts[q.VHost].deleteQueue(q.Name)
	}
	return out
}
