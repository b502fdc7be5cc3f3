package cluster

import "errors"

var (
	// ErrStopped is returned (or completes a future) when the host is not
	// running: Stop was called, Start was not, or the loop failed.
	ErrStopped = errors.New("cluster: host stopped")

	// ErrDropped completes a proposal's future when raft dropped it, or when
	// leadership changed while it was in flight. The entry may or may not
	// have been committed; the proposer decides whether to retry (at least
	// once) or give up.
	ErrDropped = errors.New("cluster: proposal dropped")

	// ErrGroupExists is returned by AddGroup for a group the host runs.
	ErrGroupExists = errors.New("cluster: group already running")

	// ErrUnknownGroup is returned for a group the host does not run.
	ErrUnknownGroup = errors.New("cluster: unknown group")

	// ErrGroupRemoved is returned (or completes a future) for a group that
	// RemoveGroup removed, or that AddGroup gave up recovering.
	ErrGroupRemoved = errors.New("cluster: group removed")

	// ErrNotDone is returned by Future.Result before the future completes.
	ErrNotDone = errors.New("cluster: future not done")

	// ErrInvalidConfig is returned by NewHost for an unusable Config.
	ErrInvalidConfig = errors.New("cluster: invalid config")
)
