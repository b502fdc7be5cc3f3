// Command parleyctl administers a running parley over its HTTP listener (--http, default
// 127.0.0.1:15672). It owns nothing but talking to a node and printing what it answers. For now
// it has one command, `parleyctl cluster status`, which prints the cluster status a node reports
// at GET /api/cluster/status: the nodes, which one serves, and for every raft group its leader,
// applied index and (from the leader) each follower's lag.
package main
