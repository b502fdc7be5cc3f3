package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "parleyctl: %v\n", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New(`usage: parleyctl [--http ADDR] [--timeout D] cluster status [--json]
       parleyctl [--http ADDR] [--timeout D] cluster join ID=HOST:PORT
       parleyctl [--http ADDR] [--timeout D] cluster leave ID`)

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("parleyctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	httpAddr := fs.String("http", "127.0.0.1:15672", "the node's HTTP listener")
	timeout := fs.Duration("timeout", 0, "how long to wait (default 10s for status, 5m for join and leave)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	rest := fs.Args()
	if len(rest) == 3 && rest[0] == "cluster" && (rest[1] == "join" || rest[1] == "leave") {
		if *timeout == 0 {
			*timeout = 5 * time.Minute
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		return changeMembership(ctx, *httpAddr, rest[1], rest[2], out)
	}
	asJSON := false
	if n := len(rest); n == 3 && rest[2] == "--json" {
		asJSON, rest = true, rest[:2]
	}
	if len(rest) != 2 || rest[0] != "cluster" || rest[1] != "status" {
		return errUsage
	}
	if *timeout == 0 {
		*timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	body, err := get(ctx, "http://"+*httpAddr+"/api/cluster/status")
	if err != nil {
		return err
	}
	if asJSON {
		_, err := out.Write(body)
		return err
	}
	var st status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("reading the status from %s: %w", *httpAddr, err)
	}
	return st.print(out)
}

func get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("asking %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("asking %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

type status struct {
	Node    uint64 `json:"node"`
	NodeID  string `json:"node_id"`
	Serving bool   `json:"serving"`
	Leader  uint64 `json:"metadata_leader"`
	Members []struct {
		ID   uint64 `json:"id"`
		Addr string `json:"addr"`
	} `json:"members"`
	Peers []struct {
		ID        uint64
		Addr      string
		Connected bool
		Meta      map[string]string
		Dropped   uint64
	} `json:"peers"`
	Groups []struct {
		ID       uint64            `json:"id"`
		Leader   uint64            `json:"leader"`
		Term     uint64            `json:"term"`
		Commit   uint64            `json:"commit"`
		Applied  uint64            `json:"applied"`
		Parked   bool              `json:"parked"`
		Voters   []uint64          `json:"voters"`
		Learners []uint64          `json:"learners"`
		Lag      map[string]uint64 `json:"lag"`
	} `json:"groups"`
}

func (st status) print(out io.Writer) error {
	w := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	role := "standby (forwards clients to the serving node)"
	if st.Serving {
		role = "serving"
	}
	fmt.Fprintf(w, "node %d (%s): %s; serving node: %d\n\n", st.Node, st.NodeID, role, st.Leader)
	if len(st.Members) > 0 {
		// Roles as group 0 (the metadata) has them: a node joining is a learner until caught up.
		var meta struct{ voters, learners []uint64 }
		for _, g := range st.Groups {
			if g.ID == 0 {
				meta.voters, meta.learners = g.Voters, g.Learners
			}
		}
		fmt.Fprintln(w, "MEMBER\tCLUSTER ADDR\tROLE (metadata group)")
		for _, m := range st.Members {
			role := "not in the metadata group"
			switch {
			case slices.Contains(meta.voters, m.ID):
				role = "voter"
			case slices.Contains(meta.learners, m.ID):
				role = "learner (catching up)"
			}
			fmt.Fprintf(w, "%d\t%s\t%s\n", m.ID, m.Addr, role)
		}
		fmt.Fprintln(w)
	}
	if len(st.Peers) > 0 {
		fmt.Fprintln(w, "PEER\tCLUSTER ADDR\tCONNECTED\tAMQP\tDROPPED MSGS")
		for _, p := range st.Peers {
			fmt.Fprintf(w, "%d\t%s\t%v\t%s\t%d\n", p.ID, p.Addr, p.Connected, p.Meta["amqp"], p.Dropped)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "GROUP\tLEADER\tTERM\tCOMMIT\tAPPLIED\tREPLICA\tVOTERS\tLEARNERS\tFOLLOWER LAG (entries)")
	for _, g := range st.Groups {
		var lag []string
		for id, n := range g.Lag {
			lag = append(lag, id+":"+strconv.FormatUint(n, 10))
		}
		sort.Strings(lag)
		name := strconv.FormatUint(g.ID, 10)
		if g.ID == 0 {
			name = "0 (metadata)"
		} else if g.ID>>63 == 1 {
			name = fmt.Sprintf("queue %016x", g.ID)
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%v\t%s\t%s\t%s\n", name, g.Leader, g.Term, g.Commit, g.Applied, g.Parked,
			ids(g.Voters), ids(g.Learners), strings.Join(lag, " "))
	}
	return w.Flush()
}

func ids(v []uint64) string {
	if len(v) == 0 {
		return "-"
	}
	s := make([]string, len(v))
	for i, id := range v {
		s[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(s, ",")
}
