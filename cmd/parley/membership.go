package main

// Membership changes over the HTTP API (parleyctl cluster join / leave; cluster/membership.go
// does the raft part).
//
// POST /api/cluster/join  {"id": 4, "addr": "host:25672"}
// POST /api/cluster/leave {"id": 2}
//
// Any node answers. A standby forwards the request to the serving node's HTTP listener (its
// address comes from the serving node's transport hello), because the serving node leads every
// group and only a leader proposes conf changes. The serving node runs cluster.Host.Join or
// Leave for group 0 and every durable queue group and answers when they are done. Leaving the
// serving node itself moves serving first: it hands group 0's leadership to the most caught-up
// other voter and answers 503 with "retry": the node then stops serving (it restarts as a
// standby, cluster.go) and parleyctl sends the request again, which the new serving node runs.
//
// Errors: 400 for a malformed request, 409 for a change cluster.ErrMembership refuses (last
// voter, no live majority, unknown node), 503 when no node serves or serving is moving, 500
// otherwise; the body is {"error": "...", "retry": bool}.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/cluster"
)

// memberRequest is the body of a join or leave request.
type memberRequest struct {
	ID   uint64 `json:"id"`
	Addr string `json:"addr,omitempty"`
}

// memberReply is the body of every answer.
type memberReply struct {
	OK    bool   `json:"ok,omitempty"`
	Error string `json:"error,omitempty"`
	// Retry: serving is moving; send the request again shortly, to RetryAt if set (the HTTP
	// listener of the node taking over: the one answering may be on its way out).
	Retry   bool   `json:"retry,omitempty"`
	RetryAt string `json:"retry_at,omitempty"`
	// NotMember: the node to remove is no member (a retried leave that already succeeded).
	NotMember bool `json:"not_member,omitempty"`
}

func writeReply(w http.ResponseWriter, code int, r memberReply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(r)
}

// onRemoved is the host's OnRemoved: this node is no longer a member.
func (cn *clusterNode) onRemoved() {
	cn.rmOnce.Do(func() {
		cn.log.Warn("this node was removed from the cluster (parleyctl cluster leave): it no longer serves " +
			"or forwards clients and stops now; its data directory is of no further use to the cluster")
		close(cn.removed)
	})
}

// Removed is closed when this node learns it was removed (nil for a single node: never).
func (cn *clusterNode) Removed() <-chan struct{} {
	if cn == nil {
		return nil
	}
	return cn.removed
}

func (cn *clusterNode) isMember() bool {
	for _, m := range cn.host.Members() {
		if m.ID == cn.id {
			return true
		}
	}
	return false
}

// readMemberRequest decodes a join or leave request; false when it answered an error.
func readMemberRequest(w http.ResponseWriter, r *http.Request, cn *clusterNode, join bool) (memberRequest, bool) {
	var req memberRequest
	if cn == nil {
		writeReply(w, http.StatusBadRequest, memberReply{Error: "this node runs alone (no cluster.peers): " +
			"start it with --cluster and --peers naming itself to let other nodes join"})
		return req, false
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil || req.ID == 0 {
		writeReply(w, http.StatusBadRequest, memberReply{Error: `want {"id": N (not 0), "addr": "host:port"}`})
		return req, false
	}
	if join {
		if _, _, err := net.SplitHostPort(req.Addr); err != nil {
			writeReply(w, http.StatusBadRequest, memberReply{Error: fmt.Sprintf("addr %q: want the new node's cluster address, host:port", req.Addr)})
			return req, false
		}
	}
	return req, true
}

func (cn *clusterNode) handleJoin(w http.ResponseWriter, r *http.Request) {
	req, ok := readMemberRequest(w, r, cn, true)
	if !ok {
		return
	}
	if !cn.servesHere() {
		cn.forward(w, r, "/api/cluster/join", req)
		return
	}
	cn.log.Info("membership: join requested", zap.Uint64("node", req.ID), zap.String("addr", req.Addr))
	if err := cn.host.Join(r.Context(), req.ID, req.Addr); err != nil {
		cn.answerErr(w, "join", req.ID, err)
		return
	}
	cn.log.Info("membership: node joined; it is a voter of every group", zap.Uint64("node", req.ID))
	writeReply(w, http.StatusOK, memberReply{OK: true})
}

func (cn *clusterNode) handleLeave(w http.ResponseWriter, r *http.Request) {
	req, ok := readMemberRequest(w, r, cn, false)
	if !ok {
		return
	}
	if !cn.servesHere() {
		cn.forward(w, r, "/api/cluster/leave", req)
		return
	}
	cn.log.Info("membership: leave requested", zap.Uint64("node", req.ID))
	err := cn.host.Leave(r.Context(), req.ID)
	if errors.Is(err, cluster.ErrLeaderLeaving) {
		cn.moveServing(r.Context(), w)
		return
	}
	if err != nil {
		cn.answerErr(w, "leave", req.ID, err)
		return
	}
	cn.log.Info("membership: node removed from every group", zap.Uint64("node", req.ID))
	writeReply(w, http.StatusOK, memberReply{OK: true})
}

func (cn *clusterNode) answerErr(w http.ResponseWriter, what string, id uint64, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, cluster.ErrMembership):
		code = http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		code = http.StatusGatewayTimeout
	}
	cn.log.Warn("membership change failed", zap.String("op", what), zap.Uint64("node", id), zap.Error(err))
	writeReply(w, code, memberReply{Error: fmt.Sprintf("%s node %d: %v", what, id, err),
		NotMember: errors.Is(err, cluster.ErrNotMember)})
}

// servesHere: this node serves (its broker runs and it leads group 0).
func (cn *clusterNode) servesHere() bool {
	return cn.listening.Load() && cn.meta.Serving()
}

// forward sends the request to the serving node's HTTP listener and relays its answer.
func (cn *clusterNode) forward(w http.ResponseWriter, r *http.Request, path string, req memberRequest) {
	target := cn.servingAddr("http")
	if target == "" {
		writeReply(w, http.StatusServiceUnavailable, memberReply{Retry: true,
			Error: "no node serves the cluster right now (or its HTTP listener is off); try again"})
		return
	}
	body, _ := json.Marshal(req)
	fr, err := http.NewRequestWithContext(r.Context(), http.MethodPost, "http://"+target+path, bytes.NewReader(body))
	if err != nil {
		writeReply(w, http.StatusInternalServerError, memberReply{Error: err.Error()})
		return
	}
	fr.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(fr)
	if err != nil {
		writeReply(w, http.StatusServiceUnavailable, memberReply{Retry: true,
			Error: fmt.Sprintf("forwarding to the serving node at %s: %v", target, err)})
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 1<<20))
}

// moveServing hands group 0's leadership to the most caught-up other voter, so that this node
// (asked to leave) stops serving and the other runs the request when it is sent again.
func (cn *clusterNode) moveServing(ctx context.Context, w http.ResponseWriter) {
	st, err := cn.host.Status(ctx)
	if err != nil {
		writeReply(w, http.StatusInternalServerError, memberReply{Error: err.Error()})
		return
	}
	var to uint64
	best := ^uint64(0)
	for _, g := range st {
		if g.ID != broker.MetaGroup {
			continue
		}
		connected := map[uint64]bool{}
		for _, p := range cn.tr.Peers() {
			connected[p.ID] = p.Connected
		}
		for _, v := range g.Voters {
			if lag, ok := g.Lag[v]; ok && v != cn.id && connected[v] && lag < best {
				to, best = v, lag
			}
		}
		if to == 0 || len(g.Voters) < 2 {
			writeReply(w, http.StatusConflict, memberReply{Error: fmt.Sprintf(
				"node %d serves the cluster and no other voter (of %v) is reachable to take over: it cannot leave", cn.id, g.Voters)})
			return
		}
	}
	if to == 0 {
		writeReply(w, http.StatusConflict, memberReply{Error: fmt.Sprintf(
			"node %d serves the cluster and runs no metadata group to hand over: it cannot leave", cn.id)})
		return
	}
	var at string
	for _, p := range cn.tr.Peers() {
		if p.ID == to {
			at = p.Meta["http"]
		}
	}
	// Answer first: once the leadership moves this node stops serving and restarts as a
	// standby, which would cut an answer still to be written.
	writeReply(w, http.StatusServiceUnavailable, memberReply{Retry: true, RetryAt: at, Error: fmt.Sprintf(
		"node %d serves the cluster: serving moves to node %d first; send the request again (parleyctl does)", cn.id, to)})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	cn.log.Warn("membership: this node is asked to leave while it serves: serving moves to another node first",
		zap.Uint64("to", to))
	if err := cn.host.TransferLeadership(context.WithoutCancel(ctx), broker.MetaGroup, to); err != nil {
		cn.log.Warn("membership: moving serving failed; the retried request tries again", zap.Error(err))
	}
}
