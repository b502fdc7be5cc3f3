package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// parleyctl cluster status prints what the node's status endpoint answers, and refuses what it
// does not know with a usage error.
func TestClusterStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/cluster/status" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"node":2,"node_id":"parley-2","serving":true,"metadata_leader":2,
			"peers":[{"ID":1,"Addr":"127.0.0.1:25672","Connected":false,"Meta":{"amqp":"127.0.0.1:5672"}}],
			"groups":[{"id":0,"leader":2,"term":3,"commit":9,"applied":9,"lag":{"1":4,"3":0}},
			{"id":9223372036854775817,"leader":2,"term":2,"commit":5,"applied":5}]}`))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	var out bytes.Buffer
	if err := run([]string{"--http", addr, "cluster", "status"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"node 2 (parley-2): serving", "0 (metadata)", "1:4 3:0", "queue 8000000000000009", "127.0.0.1:5672"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := run([]string{"--http", addr, "cluster", "status", "--json"}, &out); err != nil || !strings.HasPrefix(out.String(), `{"node":2`) {
		t.Errorf("--json: %v %q", err, out.String())
	}
	for _, args := range [][]string{{}, {"cluster"}, {"queues", "list"}, {"--nope"}} {
		if err := run(args, &out); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want usage", args, err)
		}
	}
	for _, args := range [][]string{{"cluster", "join"}, {"cluster", "join", "4"}, {"cluster", "join", "x=h:1"},
		{"cluster", "join", "4=nohostport"}, {"cluster", "leave", "node"}} {
		if err := run(args, &out); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want usage", args, err)
		}
	}
}

// join and leave post to the node; a 503 asking to retry is retried, a refusal is an error with
// the node's message.
func TestClusterJoinLeave(t *testing.T) {
	var got []string
	tries := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path+" "+string(body))
		switch {
		case r.URL.Path == "/api/cluster/join":
			_, _ = w.Write([]byte(`{"ok":true}`))
		case strings.Contains(string(body), `"id":1`) && tries == 0:
			tries++
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"serving moves","retry":true}`))
		case strings.Contains(string(body), `"id":1`):
			_, _ = w.Write([]byte(`{"ok":true}`))
		default:
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"error":"node 3 is the last voter"}`))
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	var out bytes.Buffer
	if err := run([]string{"--http", addr, "cluster", "join", "parley-4=127.0.0.1:25675"}, &out); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"--http", addr, "cluster", "leave", "parley-1"}, &out); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"--http", addr, "cluster", "leave", "3"}, &out)
	if err == nil || !strings.Contains(err.Error(), "last voter") {
		t.Fatalf("refused leave: %v", err)
	}
	want := []string{
		`POST /api/cluster/join {"id":4,"addr":"127.0.0.1:25675"}`,
		`POST /api/cluster/leave {"id":1}`, `POST /api/cluster/leave {"id":1}`,
		`POST /api/cluster/leave {"id":3}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
