package queue

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/parleymq/parley/broker/message"
)

// script runs a small command language against one queue, in the style of etcd-io/raft's
// datadriven tests. Each line is
//
//	[@NOW] COMMAND ARGS... [=> EXPECTED]
//
// @NOW sets the clock (ms) for this and later lines. Every command renders its result and
// the effects it appended to the Output, space-separated; EXPECTED must match exactly (an
// absent "=> ..." means nothing). Effects render as C:BODY for a delivery to consumer C
// (with * when redelivered) and dl:BODY/REASON for a dead letter. Commands:
//
//	pub BODY [prio=N] [exp=MS] [size=N]   "refused" when the queue refuses it
//	consume ID [prefetch=N] [noack] [excl] [prio=N]   "exclusive" on ErrExclusiveConsumer
//	cancel ID
//	drain [deny=ID,ID...]                 allow() refuses the listed consumers
//	ack|requeue|discard BODY...           "unknown" on ErrUnknownDelivery
//	get [noack]                           BODY[*] or "empty"
//	maxlen n=N                            SetConfig with x-max-length N
//	purge                                 the count
//	state                                 ready=N bytes=N unacked=N consumers=N
//	expiry                                NextExpiry: the time, or "none"
type script struct {
	t     *testing.T
	q     *Queue
	out   Output
	now   int64
	ids   map[string]DeliveryID // body -> its latest delivery id
	asked []ConsumerID          // allow() calls, in order
}

func runScript(t *testing.T, cfg Config, lines string) *script {
	t.Helper()
	s := &script{t: t, q: New(cfg), ids: map[string]DeliveryID{}}
	for n, line := range strings.Split(strings.TrimSpace(lines), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd, want, _ := strings.Cut(line, "=>")
		got := s.run(strings.Fields(cmd))
		if want = strings.TrimSpace(want); got != want {
			t.Fatalf("line %d %q:\n got: %q\nwant: %q", n+1, strings.TrimSpace(cmd), got, want)
		}
	}
	return s
}

func cfgDefault() Config { return Config{Name: "q", MessageTTL: -1, MaxLength: -1, MaxLengthBytes: -1} }

func (s *script) run(f []string) string {
	if strings.HasPrefix(f[0], "@") {
		now, err := strconv.ParseInt(f[0][1:], 10, 64)
		if err != nil {
			s.t.Fatalf("bad time %q", f[0])
		}
		s.now, f = now, f[1:]
	}
	var res []string
	opts := map[string]string{}
	var args []string
	for _, a := range f[1:] {
		if k, v, ok := strings.Cut(a, "="); ok {
			opts[k] = v
		} else {
			opts[a] = ""
			args = append(args, a)
		}
	}
	num := func(k string) int64 {
		v, err := strconv.ParseInt(opts[k], 10, 64)
		if err != nil {
			s.t.Fatalf("bad %s=%q", k, opts[k])
		}
		return v
	}
	switch f[0] {
	case "pub":
		m := &message.Message{RoutingKey: "q", Body: []byte(args[0])}
		if _, ok := opts["size"]; ok {
			m.Body = make([]byte, num("size"))
			m.Properties.MessageID = args[0]
		}
		if _, ok := opts["prio"]; ok {
			m.Properties.Flags |= message.FlagPriority
			m.Properties.Priority = uint8(num("prio"))
		}
		if v, ok := opts["exp"]; ok {
			m.Properties.Flags |= message.FlagExpiration
			m.Properties.Expiration = v
		}
		if !s.q.Publish(s.now, m, &s.out) {
			res = append(res, "refused")
		}
	case "consume":
		id, _ := strconv.ParseUint(args[0], 10, 64)
		spec := ConsumerSpec{ID: ConsumerID(id)}
		if _, ok := opts["prefetch"]; ok {
			spec.Prefetch = uint32(num("prefetch"))
		}
		if _, ok := opts["prio"]; ok {
			spec.Priority = int32(num("prio"))
		}
		_, spec.NoAck = opts["noack"]
		_, spec.Exclusive = opts["excl"]
		if err := s.q.AddConsumer(spec); errors.Is(err, ErrExclusiveConsumer) {
			res = append(res, "exclusive")
		} else if errors.Is(err, ErrDuplicateConsumer) {
			res = append(res, "duplicate")
		} else if err != nil {
			res = append(res, err.Error())
		}
	case "cancel":
		id, _ := strconv.ParseUint(args[0], 10, 64)
		s.q.RemoveConsumer(ConsumerID(id))
	case "drain":
		var allow func(ConsumerID) bool
		if v, ok := opts["deny"]; ok {
			deny := map[ConsumerID]bool{}
			for _, d := range strings.Split(v, ",") {
				id, _ := strconv.ParseUint(d, 10, 64)
				deny[ConsumerID(id)] = true
			}
			allow = func(id ConsumerID) bool { s.asked = append(s.asked, id); return !deny[id] }
		}
		s.q.Drain(s.now, allow, &s.out)
	case "ack", "requeue", "discard":
		o := map[string]Outcome{"ack": Ack, "requeue": Requeue, "discard": Discard}[f[0]]
		ids := make([]DeliveryID, len(args))
		for i, b := range args {
			ids[i] = s.ids[b]
		}
		if err := s.q.Settle(s.now, ids, o, &s.out); errors.Is(err, ErrUnknownDelivery) {
			res = append(res, "unknown")
		} else if err != nil {
			res = append(res, err.Error())
		}
	case "get":
		_, noAck := opts["noack"]
		d, ok := s.q.Get(s.now, noAck, &s.out)
		if !ok {
			res = append(res, "empty")
		} else {
			res = append(res, s.render(d, false))
		}
	case "maxlen": // SetConfig with a new x-max-length
		cfg := s.q.Config()
		cfg.MaxLength = num("n")
		s.q.SetConfig(s.now, cfg, &s.out)
	case "purge":
		res = append(res, strconv.Itoa(s.q.Purge(&s.out)))
	case "state":
		res = append(res, fmt.Sprintf("ready=%d bytes=%d unacked=%d consumers=%d", s.q.Len(), s.q.Bytes(), s.q.Unacked(), s.q.ConsumerCount()))
	case "expiry":
		if at, ok := s.q.NextExpiry(); ok {
			res = append(res, strconv.FormatInt(at, 10))
		} else {
			res = append(res, "none")
		}
	default:
		s.t.Fatalf("unknown command %q", f[0])
	}
	for _, d := range s.out.Deliveries {
		res = append(res, s.render(d, true))
	}
	for _, dl := range s.out.DeadLetters {
		res = append(res, "dl:"+body(dl.Msg)+"/"+dl.Reason.String())
	}
	s.out.Reset()
	return strings.Join(res, " ")
}

func body(m *message.Message) string {
	if m.Properties.MessageID != "" {
		return m.Properties.MessageID
	}
	return string(m.Body)
}

func (s *script) render(d Delivery, withConsumer bool) string {
	b := body(d.Msg)
	s.ids[b] = d.ID
	r := b
	if withConsumer {
		r = strconv.FormatUint(uint64(d.Consumer), 10) + ":" + b
	}
	if d.Redelivered {
		r += "*"
	}
	return r
}
