package cluster

// Changing the membership of a group led by another node. Join and Leave run on the node that
// serves (it leads group 0, the membership group), and used to take the lead of every other
// group too, since only a leader proposes conf changes. With spread queues (issue 7) a durable
// queue's group is led by the node that runs the queue, and taking its lead away stops the
// queue there: its proxies re-attach elsewhere (a publish in flight at that moment is nacked),
// and the re-attachment takes the lead away again, from under the change. So, when the host
// serves membership calls over the RPC channel (ServeMembership), Join and Leave ask the leader
// of such a group to make the change itself: add the node as a learner, wait until it caught up
// and promote it; check that removing it leaves a live majority; remove it. The leader runs
// exactly what Join and Leave run for the groups they lead, and the queue keeps running. When
// the leader is unknown, is this node or the node leaving (it cannot remove itself), or does
// not answer (it died, lost the lead for good), Join and Leave fall back to leading the group
// themselves, as before.

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

// rpcGroupConf: call; body: op byte, uvarint group, uvarint node -> for opLeaveCheck one byte,
// 1 when the node is in no configuration of the group; else empty; an error when the change is
// refused or this node does not lead the group.
const rpcGroupConf = "cluster.group-conf"

// The operations of rpcGroupConf.
const (
	opJoin       byte = 1 // joinGroupHere
	opLeaveCheck byte = 2 // leaveCheckHere
	opRemove     byte = 3 // removeHere
)

// remoteConfTimeout bounds one leader's work on a group-conf call (a learner catching up on a
// long log takes a while; Join's and Leave's own contexts bound the whole).
const remoteConfTimeout = 2 * time.Minute

// remoteConfTries is how many times a change asks a group's leader (the leader may change
// between tries) before this node takes the group's lead itself.
const remoteConfTries = 5

// ServeMembership lets the other nodes' Join and Leave ask this node, when it leads one of
// their groups, to change its configuration (see the file comment), and lets this node's ask
// them.
func (h *Host) ServeMembership(r *RPC) {
	h.memberRPC.Store(r)
	r.Handle(rpcGroupConf, h.handleGroupConf)
}

// handleGroupConf runs a group-conf call on its own goroutine: the peer's RPC dispatcher must
// not wait for a learner to catch up (it carries the peer's queue operations too).
func (h *Host) handleGroupConf(ctx context.Context, from uint64, body []byte, reply func([]byte, error)) {
	if len(body) < 1 {
		reply(nil, errors.New("group-conf: bad request"))
		return
	}
	op := body[0]
	gid, n := binary.Uvarint(body[1:])
	if n <= 0 {
		reply(nil, errors.New("group-conf: bad request"))
		return
	}
	node, m := binary.Uvarint(body[1+n:])
	if m <= 0 || node == 0 || op < opJoin || op > opRemove {
		reply(nil, errors.New("group-conf: bad request"))
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(ctx, remoteConfTimeout)
		defer cancel()
		h.log.Info("membership: changing a group this node leads, for the serving node",
			zap.Uint64("group", gid), zap.Uint64("node", node), zap.Uint8("op", op), zap.Uint64("asked_by", from))
		switch op {
		case opJoin:
			reply(nil, h.joinGroupHere(ctx, gid, node, false))
		case opLeaveCheck:
			absent, err := h.leaveCheckHere(ctx, gid, node, false)
			if err != nil {
				reply(nil, err)
				return
			}
			b := []byte{0}
			if absent {
				b[0] = 1
			}
			reply(b, nil)
		case opRemove:
			reply(nil, h.removeHere(ctx, gid, node, false))
		}
	}()
}

// groupConf runs op for node id on group gid: through the group's leader when it is another
// node that serves membership calls (and, for a removal, not the node removed), else here,
// taking the lead. changeMu held.
func (h *Host) groupConf(ctx context.Context, op byte, gid, id uint64) (absent bool, err error) {
	r := h.memberRPC.Load()
	for try := 0; r != nil && try < remoteConfTries; try++ {
		g := h.Group(gid)
		if g == nil {
			return false, ErrUnknownGroup
		}
		l := g.Leader()
		if l == id && op != opJoin && try < remoteConfTries-1 {
			// The node leaving leads the group (it runs the queue): hand the lead to another
			// voter, which runs the queue from then on, and ask that one.
			if to := h.otherVoter(ctx, gid, id); to != 0 {
				h.log.Info("membership: the node leaving leads a group; moving the lead first",
					zap.Uint64("group", gid), zap.Uint64("node", id), zap.Uint64("to", to))
				if err := h.TransferLeadership(ctx, gid, to); err != nil {
					return false, err
				}
				select {
				case <-ctx.Done():
					return false, ctx.Err()
				case <-time.After(h.electionTimeout() / 2):
				}
				continue
			}
		}
		if l == 0 || l == h.cfg.NodeID || l == id || !h.isMemberID(l) {
			break
		}
		body := append([]byte{op}, binary.AppendUvarint(nil, gid)...)
		body = binary.AppendUvarint(body, id)
		rep, err := r.Call(ctx, l, rpcGroupConf, body)
		if err == nil {
			return len(rep) == 1 && rep[0] == 1, nil
		}
		if ctx.Err() != nil {
			return false, err
		}
		var re *RemoteError
		if errors.As(err, &re) {
			switch {
			case strings.Contains(re.Msg, ErrUnknownGroup.Error()):
				return false, ErrUnknownGroup // deleted meanwhile
			case strings.Contains(re.Msg, ErrMembership.Error()):
				return false, fmt.Errorf("%w (node %d, the group's leader, says: %s)", ErrMembership, l, re.Msg)
			}
		}
		h.log.Info("membership: the group's leader did not make the change; asking again",
			zap.Uint64("group", gid), zap.Uint64("leader", l), zap.Uint64("node", id), zap.Uint8("op", op), zap.Error(err))
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(h.electionTimeout() / 2):
		}
	}
	switch op {
	case opJoin:
		return false, h.joinGroupHere(ctx, gid, id, true)
	case opLeaveCheck:
		return h.leaveCheckHere(ctx, gid, id, true)
	default:
		return false, h.removeHere(ctx, gid, id, true)
	}
}

// otherVoter is a voter of group gid that is a member, neither this node nor node id (0: none).
func (h *Host) otherVoter(ctx context.Context, gid, id uint64) uint64 {
	gc, err := h.confOf(ctx, gid, id)
	if err != nil {
		return 0
	}
	for _, v := range gc.voters {
		if v != id && v != h.cfg.NodeID && h.isMemberID(v) {
			return v
		}
	}
	return 0
}

// joinGroup makes node id a voter of group gid (groupConf). changeMu held.
func (h *Host) joinGroup(ctx context.Context, gid, id uint64) error {
	_, err := h.groupConf(ctx, opJoin, gid, id)
	return err
}

// leaveCheckHere is Leave's check of group gid, from this node, which leads it (mayLead: see
// joinGroupHere): absent when node id is in no configuration of the group, an error when
// removing it would leave no live majority.
func (h *Host) leaveCheckHere(ctx context.Context, gid, id uint64, mayLead bool) (absent bool, err error) {
	if err := h.leadAs(ctx, gid, mayLead); err != nil {
		return false, err
	}
	gc, err := h.liveVoters(ctx, gid, id, func(gc groupConf) bool { return checkRemoval(gc, id) == nil })
	if err != nil {
		return false, err
	}
	if !gc.leading {
		return false, fmt.Errorf("group %d: %w", gid, ErrNotLeader)
	}
	if !slices.Contains(gc.voters, id) && !slices.Contains(gc.learners, id) {
		return true, nil
	}
	return false, checkRemoval(gc, id)
}

// removeHere removes node id from group gid, from this node, which leads it (mayLead: see
// joinGroupHere).
func (h *Host) removeHere(ctx context.Context, gid, id uint64, mayLead bool) error {
	gone := func(gc groupConf) bool {
		return !slices.Contains(gc.voters, id) && !slices.Contains(gc.learners, id)
	}
	return h.ensureConfAs(ctx, gid, id, gone, raftpb.ConfChangeRemoveNode, confContext{}, mayLead)
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
