package mqtt

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapHandler adapts zap to the log/slog logger mochi-mqtt takes, so mochi's lines go through
// the broker's logger with its level and format. mochi logs per-connection trouble at Warn
// (a client that went away, a malformed packet); that is Debug for a broker, so levels shift
// down one step below Error.
type zapHandler struct {
	log   *zap.Logger
	attrs []zap.Field
	group string
}

func newSlog(log *zap.Logger) *slog.Logger { return slog.New(&zapHandler{log: log}) }

func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelInfo:
		return zapcore.DebugLevel
	default:
		return zapcore.DebugLevel - 1 // below debug: mochi's chatter stays out even at debug
	}
}

func (h *zapHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.Core().Enabled(zapLevel(l))
}

func (h *zapHandler) Handle(_ context.Context, r slog.Record) error {
	lvl := zapLevel(r.Level)
	ce := h.log.Check(lvl, r.Message)
	if ce == nil {
		return nil
	}
	fields := append([]zap.Field(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, h.field(a))
		return true
	})
	ce.Write(fields...)
	return nil
}

func (h *zapHandler) field(a slog.Attr) zap.Field {
	key := a.Key
	if h.group != "" {
		key = h.group + "." + key
	}
	return zap.Any(key, a.Value.Resolve().Any())
}

func (h *zapHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]zap.Field(nil), h.attrs...), make([]zap.Field, 0, len(attrs))...)
	for _, a := range attrs {
		n.attrs = append(n.attrs, h.field(a))
	}
	return &n
}

func (h *zapHandler) WithGroup(name string) slog.Handler {
	n := *h
	if n.group != "" {
		name = n.group + "." + name
	}
	n.group = name
	return &n
}
