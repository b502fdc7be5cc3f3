package integration

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Ports for the processes a test starts. A port is picked free, then the process binds it
// later; meanwhile (and while a process the test restarts is down) another process may take
// it. freePort reserves each port it hands out for the life of the test binary, in this binary
// and in every other one using this harness at the same time (several test runs share a
// machine): a lock file per port under the temp directory, flock'ed and kept open. The lock
// goes with the process, so a crashed run leaves nothing reserved. Readiness is then checked
// against the process itself (listenerOf), for ports taken by anything else.

var (
	portsMu  sync.Mutex
	reserved = map[int]*os.File{} // the lock files held, by port; never closed
)

// freePort picks a port on 127.0.0.1 that is free now and reserved for this test binary. It
// prefers ports below Linux's ephemeral range (32768–60999 by default): a port the kernel
// handed out for ":0" is also where it picks the source ports of outgoing connections, and the
// tests open thousands of those, so such a port was now and then taken by a client connection
// between the pick and the server's bind. A random pick in 20000–32767 meets neither; if none
// is free after a few tries, the kernel picks (reserved the same way). A port is handed out
// once per test binary: a cluster test picks a dozen ports before any process binds them, and
// two random picks in that range met now and then (a node's AMQP and cluster ports were the
// same).
func freePort() (int, error) {
	for range 50 {
		port := 20000 + rand.IntN(32768-20000)
		if ok, err := reservePort(port); err != nil {
			return 0, err
		} else if ok {
			return port, nil
		}
	}
	for range 10 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if ok, err := reservePort(port); err != nil {
			return 0, err
		} else if ok {
			return port, nil
		}
	}
	return 0, errors.New("no free port to reserve")
}

// reservePort reserves port if no harness holds it and it is free now.
func reservePort(port int) (bool, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	if _, mine := reserved[port]; mine {
		return false, nil
	}
	dir := filepath.Join(os.TempDir(), "parley-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return false, fmt.Errorf("port reservations: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return false, fmt.Errorf("port reservations: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil // another test binary holds it
		}
		return false, fmt.Errorf("port reservations: %w", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		f.Close() // in use by something else: leave it
		return false, nil
	}
	_ = ln.Close()
	reserved[port] = f
	return true, nil
}

// listenerOf returns nil if process pid has a TCP socket listening on addr's port, an error
// saying otherwise. It reads the process's own view of the network (/proc/PID/net/tcp and
// tcp6, its namespace's) for listening sockets on the port and looks for one of them among the
// process's file descriptors. A process that has exited (not yet reaped) listens on nothing.
// Where there is no /proc (not Linux), it answers nil.
func listenerOf(pid int, addr string) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return err
	}
	inodes := map[string]bool{}
	readable := false
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		readable = true
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			if v, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(v) == port {
				inodes[f[9]] = true
			}
		}
	}
	if !readable {
		if _, err := os.Stat("/proc/self/net/tcp"); err != nil {
			return nil // no /proc to ask
		}
		// Gone (a zombie's network is no longer readable): not listening, whoever answers.
		return fmt.Errorf("process %d: no network to read: it has exited", pid)
	}
	if len(inodes) == 0 {
		return fmt.Errorf("nothing listens on port %d in the network of process %d", port, pid)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		if inode, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(inode, "]")] {
			return nil
		}
	}
	return fmt.Errorf("port %d is listened on by another process than %d", port, pid)
}
