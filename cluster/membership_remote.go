package cluster

// Joining a group led by another node. Join runs on the node that serves (it leads group 0,
// the membership group), and used to take the lead of every other group too, since only a
// leader proposes conf changes. With spread queues (issue 7) a durable queue's group is led by
// the node that runs the queue, and taking its lead away stops the queue there: its proxies
// re-attach elsewhere, and a publish in flight at that moment is nacked. So, when the host
// serves membership calls over the RPC channel (ServeMembership), Join asks the leader of such
// a group to add the node itself: the leader adds it as a learner, waits until it caught up
// and promotes it, exactly as Join does for the groups it leads, and the queue keeps running.
// When the leader is unknown, is this node, or does not answer (it died, lost the lead for
// good), Join falls back to leading the group itself, as before.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// rpcJoinGroup: call; body uvarint group, uvarint node -> empty once node is a voter of group.
const rpcJoinGroup = "cluster.join-group"

// remoteJoinTimeout bounds one leader's work on a join-group call (a learner catching up on a
// long log takes a while; Join's own context bounds the whole).
const remoteJoinTimeout = 2 * time.Minute

// remoteJoinTries is how many times Join asks a group's leader (the leader may change between
// tries) before it takes the group's lead itself.
const remoteJoinTries = 5

// ServeMembership lets the other nodes' Join ask this node, when it leads one of their groups,
// to add a node to it (see the file comment), and lets this node's Join ask them.
func (h *Host) ServeMembership(r *RPC) {
	h.memberRPC.Store(r)
	r.Handle(rpcJoinGroup, h.handleJoinGroup)
}

// handleJoinGroup adds the node to the group this node leads. It runs on its own goroutine: the
// peer's RPC dispatcher must not wait for a learner to catch up (it carries the peer's queue
// operations too).
func (h *Host) handleJoinGroup(ctx context.Context, from uint64, body []byte, reply func([]byte, error)) {
	gid, n := binary.Uvarint(body)
	if n <= 0 {
		reply(nil, errors.New("join-group: bad request"))
		return
	}
	node, m := binary.Uvarint(body[n:])
	if m <= 0 || node == 0 {
		reply(nil, errors.New("join-group: bad request"))
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(ctx, remoteJoinTimeout)
		defer cancel()
		h.log.Info("membership: adding a node to a group this node leads, for the serving node",
			zap.Uint64("group", gid), zap.Uint64("node", node), zap.Uint64("asked_by", from))
		reply(nil, h.joinGroupHere(ctx, gid, node, false))
	}()
}

// joinGroup makes node id a voter of group gid: through the group's leader when it is another
// node that serves membership calls, else here (taking the lead). changeMu held.
func (h *Host) joinGroup(ctx context.Context, gid, id uint64) error {
	r := h.memberRPC.Load()
	for try := 0; r != nil && try < remoteJoinTries; try++ {
		g := h.Group(gid)
		if g == nil {
			return ErrUnknownGroup
		}
		l := g.Leader()
		if l == 0 || l == h.cfg.NodeID || l == id || !h.isMemberID(l) {
			break
		}
		body := binary.AppendUvarint(nil, gid)
		body = binary.AppendUvarint(body, id)
		_, err := r.Call(ctx, l, rpcJoinGroup, body)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		var re *RemoteError
		if errors.As(err, &re) && strings.Contains(re.Msg, ErrUnknownGroup.Error()) {
			return ErrUnknownGroup // deleted meanwhile
		}
		h.log.Info("membership: the group's leader did not add the node; asking again",
			zap.Uint64("group", gid), zap.Uint64("leader", l), zap.Uint64("node", id), zap.Error(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(h.electionTimeout() / 2):
		}
	}
	return h.joinGroupHere(ctx, gid, id, true)
}

// joinGroupHere adds node id to group gid as a learner, waits until it caught up and promotes
// it, from this node, which leads the group (mayLead: takes its lead; else fails with
// ErrNotLeader when it does not lead it).
func (h *Host) joinGroupHere(ctx context.Context, gid, id uint64, mayLead bool) error {
	has := func(gc groupConf) bool {
		return slices.Contains(gc.voters, id) || slices.Contains(gc.learners, id)
	}
	voter := func(gc groupConf) bool { return slices.Contains(gc.voters, id) }
	err := h.ensureConfAs(ctx, gid, id, has, raftpb.ConfChangeAddLearnerNode, confContext{}, mayLead)
	if err == nil {
		err = h.waitCaughtUpAs(ctx, gid, id, mayLead)
	}
	if err == nil {
		err = h.ensureConfAs(ctx, gid, id, voter, raftpb.ConfChangeAddNode, confContext{}, mayLead)
	}
	return err
}

// leadAs is lead, or, when this node may not take the lead, a check that it leads group id and
// serves it.
func (h *Host) leadAs(ctx context.Context, id uint64, mayLead bool) error {
	if mayLead {
		return h.lead(ctx, id)
	}
	g := h.Group(id)
	if g == nil {
		return ErrUnknownGroup
	}
	if !g.Serving() {
		return fmt.Errorf("group %d: %w", id, ErrNotLeader)
	}
	return nil
}
