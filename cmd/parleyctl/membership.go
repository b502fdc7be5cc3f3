package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nodeNumber reads a node id as parley does: the number it ends in (parley-4 -> 4, 4 -> 4).
func nodeNumber(s string) (uint64, error) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	id, err := strconv.ParseUint(s[i:], 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: node id %q: it must end in the node's number (parley-4, 4)", errUsage, s)
	}
	return id, nil
}

// changeMembership runs `cluster join ID=HOST:PORT` or `cluster leave ID` against any node,
// which forwards it to the serving node. A 503 that says retry (no node serves yet, or serving
// moves away from a node asked to leave) is sent again until ctx ends.
func changeMembership(ctx context.Context, httpAddr, op, arg string, out io.Writer) error {
	var req struct {
		ID   uint64 `json:"id"`
		Addr string `json:"addr,omitempty"`
	}
	name := arg
	if op == "join" {
		var addr string
		var ok bool
		name, addr, ok = strings.Cut(arg, "=")
		if !ok {
			return fmt.Errorf("%w: cluster join wants ID=HOST:PORT (the new node's cluster address)", errUsage)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%w: cluster join %s: %q is not host:port", errUsage, arg, addr)
		}
		req.Addr = addr
	}
	id, err := nodeNumber(name)
	if err != nil {
		return err
	}
	req.ID = id
	body, _ := json.Marshal(req)
	url := "http://" + httpAddr + "/api/cluster/" + op
	retrying := false // the node asked for a retry: it may restart meanwhile (serving moved)
	for {
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		r.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			// Join and leave are idempotent, so a request whose answer was lost (the node
			// restarted as serving moved away from it) is sent again; a node that was never
			// reached (connection refused at the first try) is an error at once.
			if ctx.Err() != nil || !retrying && errors.Is(err, syscall.ECONNREFUSED) {
				return fmt.Errorf("cluster %s: asking %s: %w", op, httpAddr, err)
			}
			retrying = true
			fmt.Fprintf(out, "asking %s: %v; retrying\n", httpAddr, err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		var reply struct {
			OK        bool   `json:"ok"`
			Error     string `json:"error"`
			Retry     bool   `json:"retry"`
			RetryAt   string `json:"retry_at"`
			NotMember bool   `json:"not_member"`
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if jerr := json.Unmarshal(raw, &reply); jerr != nil {
			return fmt.Errorf("cluster %s: %s answered %s: %s", op, httpAddr, resp.Status, strings.TrimSpace(string(raw)))
		}
		if resp.StatusCode == http.StatusOK && reply.OK {
			if op == "join" {
				fmt.Fprintf(out, "node %d joined: a voter of every group\n", id)
			} else {
				fmt.Fprintf(out, "node %d left: removed from every group; stop its process\n", id)
			}
			return nil
		}
		if op == "leave" && retrying && reply.NotMember {
			// The retried removal had gone through before its answer was lost (the node that
			// relayed it was the one removed).
			fmt.Fprintf(out, "node %d left: it is no longer a member; stop its process if it still runs\n", id)
			return nil
		}
		if !reply.Retry {
			return fmt.Errorf("cluster %s: %s", op, reply.Error)
		}
		fmt.Fprintf(out, "%s; retrying\n", reply.Error)
		if reply.RetryAt != "" && reply.RetryAt != httpAddr {
			httpAddr = reply.RetryAt
			url = "http://" + httpAddr + "/api/cluster/" + op
			fmt.Fprintf(out, "sending it to %s\n", httpAddr)
		}
		retrying = true
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s: %s: %w", op, reply.Error, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
