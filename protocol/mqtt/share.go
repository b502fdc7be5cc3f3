package mqtt

// Shared subscriptions (MQTT 5 §4.8.2). $share/<group>/<filter> is one queue,
// mqtt.share.<group>.<filter>, bound to the exchange with the filter's key, with a consumer per
// subscribed session: competing consumers (DESIGN.md §3).
//
// A group's members are its subscribed sessions, connected or not. A persistent session keeps
// its shared subscriptions in "share:" records (durable.go), and while one such session exists
// the group keeps receiving (MQTT 5 §4.8.2: a shared subscription lives as long as a session
// subscribed to it does, connected or not): its queue keeps the messages published while no member is
// connected, and they go to the first member that connects. So:
//
//   - The group's queue is durable when the member that declares it has a persistent session
//     (its QoS 1/2 messages are then in the log and survive a restart), transient otherwise.
//     A persistent session joining a group whose queue a clean session declared leaves it
//     transient: its messages are then kept while the broker runs, not across a restart.
//   - The queue is deleted once the group has no member: when its last connected member leaves
//     and no persistent session has a "share:" record for it (leaveShare), or, for a group
//     whose members' sessions expired or ended while none was connected, by a sweep
//     (sweepShares) that looks every shareSweepInterval.

import (
	"errors"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/meta"
)

// shareSweepInterval is how often sweepShares looks for group queues without members.
const shareSweepInterval = time.Minute

func shareQueueName(group, filter string) string { return shareQueuePrefix + group + "." + filter }

func (x *session) bindShared(f packets.Subscription, group, filter string, qos byte) error {
	x.mu.Lock()
	old := x.subs[f.Filter]
	x.mu.Unlock()
	if old != nil && old.shared != nil {
		x.mu.Lock()
		old.qos, old.id = qos, f.Identifier
		x.mu.Unlock()
		x.setState(stateSharePrefix+f.Filter, shareRecord(qos, f.Identifier))
		return nil
	}
	c := &consumer{x: x}
	sub := &subscription{filter: f.Filter, match: filter, qos: qos, id: f.Identifier, shared: c}
	c.sub = sub
	x.mu.Lock()
	x.subs[f.Filter] = sub
	x.mu.Unlock()
	if err := x.s.joinShare(x.v, shareQueueName(group, filter), FilterToBindingKey(filter), c, x.persistent && !x.endsAtClose); err != nil {
		x.mu.Lock()
		delete(x.subs, f.Filter)
		x.mu.Unlock()
		return err
	}
	x.setState(stateSharePrefix+f.Filter, shareRecord(qos, f.Identifier))
	return nil
}

// joinShare makes c a consumer of a shared subscription group's queue, declaring the queue
// (durable when the member is persistent) and its binding if the group has none. It runs under
// shareMu, as leaveShare and the sweep do, so a member joining as the last one leaves never
// finds its queue deleted under it (an auto-delete queue would be).
func (s *Server) joinShare(v *broker.VHost, name, key string, c *consumer, durable bool) error {
	s.shareMu.Lock()
	defer s.shareMu.Unlock()
	if _, err := v.DeclareQueue(meta.QueueDef{Name: name, Durable: durable, Packed: true}, false); err != nil {
		var me *meta.Error
		if _, exists := v.LookupQueue(name); !exists || !errors.As(err, &me) || me.Code != meta.PreconditionFailed {
			return err
		}
		// Declared by a member of the other kind (durable or not): the group keeps it.
	}
	if err := v.Bind(meta.BindingDef{Source: s.cfg.Exchange, Dest: destQueue(name), Key: key}, 0); err != nil {
		return err
	}
	q, ok := v.LookupQueue(name)
	if !ok {
		return errors.New("shared subscription queue vanished")
	}
	c.q = q
	if err := c.consume(); err != nil {
		return err
	}
	s.shares[name]++
	c.joined = true
	return nil
}

// leaveShare ends c's membership of its group (c is cancelled already). When the last
// connected member leaves, the group's queue is deleted unless a persistent session is still
// a member: then it keeps the group's messages until one connects.
func (s *Server) leaveShare(c *consumer) {
	if !c.joined {
		return
	}
	c.joined = false
	s.shareMu.Lock()
	defer s.shareMu.Unlock()
	name := c.q.Name()
	if s.shares[name]--; s.shares[name] > 0 {
		return
	}
	delete(s.shares, name)
	if !s.persistentShareMembers(c.x.v)[name] {
		c.x.v.DeleteQueueIf(c.q)
	}
}

// persistentShareMembers returns the names of the group queues that some persistent
// session's "share:" records name. It reads every session's records: it runs when a group's
// last connected member leaves, and in the sweep.
func (s *Server) persistentShareMembers(v *broker.VHost) map[string]bool {
	out := map[string]bool{}
	for _, q := range v.QueuesWithPrefix(sessionQueuePrefix) {
		if !q.Def().Durable {
			continue
		}
		for k := range q.State() {
			filter, ok := strings.CutPrefix(k, stateSharePrefix)
			if !ok {
				continue
			}
			if group, match, ok := splitShared(filter); ok {
				out[shareQueueName(group, match)] = true
			}
		}
	}
	return out
}

// sweepShares deletes the group queues without a member: none connected and no persistent
// session that subscribed (their sessions expired or ended while disconnected).
func (s *Server) sweepShares() {
	v, ok := s.b.VHost(s.cfg.VHost)
	if !ok {
		return
	}
	s.shareMu.Lock()
	defer s.shareMu.Unlock()
	var members map[string]bool
	for _, q := range v.QueuesWithPrefix(shareQueuePrefix) {
		if s.shares[q.Name()] > 0 || q.ConsumerCount() > 0 {
			continue
		}
		if members == nil {
			members = s.persistentShareMembers(v)
		}
		if !members[q.Name()] {
			s.log.Debug("mqtt shared subscription group without members deleted", zap.String("queue", q.Name()))
			v.DeleteQueueIf(q)
		}
	}
}

// sweepLoop runs sweepShares every shareSweepInterval until done is closed.
func (s *Server) sweepLoop(done <-chan struct{}) {
	t := time.NewTicker(shareSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			s.sweepShares()
		}
	}
}
