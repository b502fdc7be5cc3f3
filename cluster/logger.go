package cluster

import (
	"fmt"

	"go.etcd.io/raft/v3"
	"go.uber.org/zap"
)

// raftLogger adapts a zap logger to raft's Logger interface. Raft logs every
// election and term change at Info; with a group per durable queue that is
// thousands of lines at each start, so raft's Info goes to Debug here, and
// the host logs what an operator needs itself.
type raftLogger struct{ s *zap.SugaredLogger }

var _ raft.Logger = raftLogger{}

func newRaftLogger(l *zap.Logger) raftLogger {
	return raftLogger{s: l.WithOptions(zap.AddCallerSkip(1)).Sugar()}
}

func (l raftLogger) Debug(v ...any)                   { l.s.Debug(v...) }
func (l raftLogger) Debugf(format string, v ...any)   { l.s.Debugf(format, v...) }
func (l raftLogger) Info(v ...any)                    { l.s.Debug(v...) }
func (l raftLogger) Infof(format string, v ...any)    { l.s.Debugf(format, v...) }
func (l raftLogger) Warning(v ...any)                 { l.s.Warn(v...) }
func (l raftLogger) Warningf(format string, v ...any) { l.s.Warnf(format, v...) }
func (l raftLogger) Error(v ...any)                   { l.s.Error(v...) }
func (l raftLogger) Errorf(format string, v ...any)   { l.s.Errorf(format, v...) }

// Fatal and Panic panic rather than exit: raft calls them on broken
// invariants, and a panic lets deferred cleanup (and tests) see it.
func (l raftLogger) Fatal(v ...any) { l.s.Error(v...); panic(fmt.Sprint(v...)) }
func (l raftLogger) Fatalf(format string, v ...any) {
	l.s.Errorf(format, v...)
	panic(fmt.Sprintf(format, v...))
}
func (l raftLogger) Panic(v ...any) { l.s.Error(v...); panic(fmt.Sprint(v...)) }
func (l raftLogger) Panicf(format string, v ...any) {
	l.s.Errorf(format, v...)
	panic(fmt.Sprintf(format, v...))
}
