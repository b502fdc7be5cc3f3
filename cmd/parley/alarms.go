package main

import (
	"sort"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/parleymq/parley/storage"
)

// alarms collects the storage engine's resource alarms (low disk, write stall) and blocks or
// unblocks publishers while any is active (DESIGN.md §4). The engine reports from its own
// goroutines and must not wait, so set only records the state and wakes run, which talks to
// the listeners; a burst of changes collapses into the latest state.
type alarms struct {
	mu     sync.Mutex
	active map[storage.AlarmKind]string
	wake   chan struct{}
	done   chan struct{}
}

func newAlarms() *alarms {
	return &alarms{active: map[storage.AlarmKind]string{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (a *alarms) set(al storage.Alarm) {
	a.mu.Lock()
	if al.Active {
		// RabbitMQ's connection.blocked reason for its disk alarm, which clients may show.
		reason := al.Reason
		if al.Kind == storage.AlarmDiskLow {
			reason = "low on disk"
		}
		a.active[al.Kind] = reason
	} else {
		delete(a.active, al.Kind)
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// run applies the current state with block(reason, blocked) after each change, until stop.
func (a *alarms) run(log *zap.Logger, block func(reason string, blocked bool)) {
	for {
		select {
		case <-a.wake:
		case <-a.done:
			return
		}
		a.mu.Lock()
		reasons := make([]string, 0, len(a.active))
		for _, r := range a.active {
			reasons = append(reasons, r)
		}
		a.mu.Unlock()
		sort.Strings(reasons)
		reason := strings.Join(reasons, "; ")
		if len(reasons) > 0 {
			log.Warn("resource alarm: blocking publishers", zap.String("reason", reason))
		} else {
			log.Info("resource alarms cleared: publishers may continue")
		}
		block(reason, len(reasons) > 0)
	}
}

func (a *alarms) stop() { close(a.done) }
