// Command parleyctl administers a running parley over its HTTP listener (--http, default
// 127.0.0.1:15672). It owns nothing but talking to a node and printing what it answers:
//
//   - `parleyctl cluster status` prints the cluster status a node reports at GET
//     /api/cluster/status: the members and their role, which node serves, and for every raft
//     group its leader, voters, learners, applied index and (from the leader) each follower's lag;
//   - `parleyctl cluster join ID=HOST:PORT` adds a started node (HOST:PORT is its cluster
//     address) to every group, as a learner promoted to voter once caught up;
//   - `parleyctl cluster leave ID` removes a node from every group.
//
// join and leave may be sent to any node (POST /api/cluster/join, /api/cluster/leave; it
// forwards them to the serving node) and wait until the change is done (--timeout, default 5m).
package main
