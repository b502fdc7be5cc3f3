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

var errUsage = errors.New("usage: parleyctl [--http ADDR] cluster status [--json]")

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("parleyctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	httpAddr := fs.String("http", "127.0.0.1:15672", "the node's HTTP listener")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the node")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	rest := fs.Args()
	asJSON := false
	if n := len(rest); n == 3 && rest[2] == "--json" {
		asJSON, rest = true, rest[:2]
	}
	if len(rest) != 2 || rest[0] != "cluster" || rest[1] != "status" {
		if len(rest) == 2 && rest[0] == "cluster" && (rest[1] == "join" || rest[1] == "leave") {
			return fmt.Errorf("cluster %s: membership changes are not implemented yet", rest[1])
		}
		return errUsage
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
	Peers   []struct {
		ID        uint64
		Addr      string
		Connected bool
		Meta      map[string]string
		Dropped   uint64
	} `json:"peers"`
	Groups []struct {
		ID      uint64            `json:"id"`
		Leader  uint64            `json:"leader"`
		Term    uint64            `json:"term"`
		Commit  uint64            `json:"commit"`
		Applied uint64            `json:"applied"`
		Parked  bool              `json:"parked"`
		Lag     map[string]uint64 `json:"lag"`
	} `json:"groups"`
}

func (st status) print(out io.Writer) error {
	w := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	role := "standby (forwards clients to the serving node)"
	if st.Serving {
		role = "serving"
	}
	fmt.Fprintf(w, "node %d (%s): %s; serving node: %d\n\n", st.Node, st.NodeID, role, st.Leader)
	if len(st.Peers) > 0 {
		fmt.Fprintln(w, "PEER\tCLUSTER ADDR\tCONNECTED\tAMQP\tDROPPED MSGS")
		for _, p := range st.Peers {
			fmt.Fprintf(w, "%d\t%s\t%v\t%s\t%d\n", p.ID, p.Addr, p.Connected, p.Meta["amqp"], p.Dropped)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "GROUP\tLEADER\tTERM\tCOMMIT\tAPPLIED\tREPLICA\tFOLLOWER LAG (entries)")
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
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%v\t%s\n", name, g.Leader, g.Term, g.Commit, g.Applied, g.Parked, strings.Join(lag, " "))
	}
	return w.Flush()
}
