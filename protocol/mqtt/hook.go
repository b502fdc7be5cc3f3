package mqtt

import (
	"bytes"
	"errors"
	"sync/atomic"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/parleymq/parley/protocol/auth"
)

// bridge is the mochi Hook that hands every session, publish and subscription to the core.
// They run while one of the connection's packets is handled (conn.go: on a short-lived goroutine,
// while the connection's reader waits for it; OnConnect, OnSessionEstablished and OnDisconnect
// are called by conn itself), one packet at a time per connection, so a hook that blocks
// (OnPublish waiting for the core) holds back only that client.
type bridge struct {
	mochi.HookBase
	s *Server
}

func (h *bridge) ID() string { return "parley-bridge" }

func (h *bridge) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnSessionEstablished,
		mochi.OnDisconnect, mochi.OnPublish, mochi.OnSubscribe, mochi.OnSubscribed, mochi.OnUnsubscribe,
		mochi.OnPacketRead, mochi.OnPacketEncode, mochi.OnPacketSent,
	}, []byte{b})
}

// refuse answers CONNECT with a failure code in the client's protocol version and ends the
// connection: conn.connect returns the error.
func (h *bridge) refuse(cl *mochi.Client, v5, v3 packets.Code) error {
	code := v5
	if cl.Properties.ProtocolVersion < 5 {
		code = v3
	}
	_ = h.s.m.SendConnack(cl, code, false, nil)
	return v5
}

// OnConnect logs the client in with the same users as AMQP and opens its session. It runs
// after mochi validated the CONNECT and before the CONNACK.
func (h *bridge) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	s := h.s
	user, pass := string(pk.Connect.Username), string(pk.Connect.Password)
	if !pk.Connect.UsernameFlag || user == "" {
		if !*s.cfg.AllowAnonymous {
			return h.refuse(cl, packets.ErrNotAuthorized, packets.Err3NotAuthorized)
		}
		user, pass = s.cfg.AnonymousUser, s.cfg.AnonymousPassword
	}
	u, err := s.users.Authenticate(user, pass, cl.Net.Conn.RemoteAddr())
	if err != nil {
		s.log.Info("mqtt login refused", zap.String("client_id", cl.ID), zap.String("remote", cl.Net.Remote), zap.Error(err))
		if errors.Is(err, auth.ErrLoopbackOnly) {
			return h.refuse(cl, packets.ErrNotAuthorized, packets.Err3NotAuthorized)
		}
		// MQTT 3.1.1 §3.2.2.3 return code 4: bad user name or password.
		return h.refuse(cl, packets.ErrBadUsernameOrPassword, packets.ErrMalformedUsernameOrPassword)
	}
	if !s.users.CanAccessVHost(u.Name, s.cfg.VHost) {
		return h.refuse(cl, packets.ErrNotAuthorized, packets.Err3NotAuthorized)
	}
	if s.cfg.MaxKeepAlive > 0 && (cl.State.Keepalive == 0 || cl.State.Keepalive > s.cfg.MaxKeepAlive) {
		// MQTT 5 server keep-alive [MQTT-3.2.2-21]; a 3.1.1 client is held to it all the same.
		cl.State.Keepalive = s.cfg.MaxKeepAlive
		cl.State.ServerKeepalive = true
	}
	sess, err := s.openSession(cl, pk, u.Name)
	if err != nil {
		s.log.Warn("mqtt session not opened", zap.String("client_id", cl.ID), zap.Error(err))
		return h.refuse(cl, packets.ErrServerUnavailable, packets.Err3ServerUnavailable)
	}
	// The will is the core's to publish (through the exchange, so AMQP consumers see it too):
	// mochi must not fan it out to its own subscriber index.
	atomic.StoreUint32(&cl.Properties.Will.Flag, 0)
	s.mu.Lock()
	s.sessions[cl] = sess
	s.byConn[cl.Net.Conn] = sess
	s.current[cl.ID] = sess
	s.mu.Unlock()
	if g, ok := cl.Net.Conn.(*guardConn); ok {
		g.sess = sess
	}
	sess.saveConnected()
	sess.resume()
	return nil
}

// OnConnectAuthenticate: OnConnect has logged the client in already.
func (h *bridge) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

// OnACLCheck applies the user's permissions: publishing needs write on the exchange,
// subscribing read on it (RabbitMQ's MQTT plugin checks the same resources).
func (h *bridge) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	sess := h.s.session(cl)
	if sess == nil {
		return false
	}
	if write {
		return sess.canPublish()
	}
	return sess.subscribeAllowed(topic)
}

// OnSessionEstablished starts the deliveries once the CONNACK is out.
func (h *bridge) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	if sess := h.s.session(cl); sess != nil {
		sess.start()
	}
}

// OnDisconnect ends the session's connection: unacknowledged deliveries go back to the
// queue, a transient session's queue is deleted, and the will is published unless the client
// said DISCONNECT (err is nil then).
func (h *bridge) OnDisconnect(cl *mochi.Client, err error, _ bool) {
	s := h.s
	s.mu.Lock()
	sess := s.sessions[cl]
	delete(s.sessions, cl)
	delete(s.byConn, cl.Net.Conn)
	s.mu.Unlock()
	if sess != nil {
		sess.close(err)
	}
	s.forgetClient(cl, sess)
}

// OnPublish routes the message into the core and returns once the core has accepted it, so
// mochi's PUBACK/PUBREC follows acceptance. Success is CodeSuccessIgnore: mochi acknowledges
// but neither retains nor fans out. A failure is answered here, in the client's terms.
func (h *bridge) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	sess := h.s.session(cl)
	if sess == nil {
		return pk, packets.ErrRejectPacket
	}
	if !sess.onPublish(&pk) {
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

// onPublish is OnPublish for the client's own session (also called by conn.publishDirect):
// true once the core took the message (mochi acknowledges it), false once a refusal was
// answered. (A bool, not mochi's codes: a packets.Code as an error is an allocation.)
func (sess *session) onPublish(pk *packets.Packet) bool {
	code := sess.publish(pk)
	if code == packets.CodeSuccess || (code == packets.CodeNoMatchingSubscribers && pk.FixedHeader.Qos == 2) {
		if pk.FixedHeader.Qos == 2 {
			sess.acceptedQoS2(pk.PacketID) // before mochi's PUBREC
		}
		return true
	}
	if code == packets.CodeNoMatchingSubscribers && sess.version < 5 {
		// MQTT 3.1.1 has no such code.
		return true
	}
	sess.refusePublish(*pk, code)
	return false
}

// OnSubscribe binds each valid filter before mochi answers; a filter that could not be
// bound is refused in OnACLCheck, which mochi asks next for each filter.
func (h *bridge) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if sess := h.s.session(cl); sess != nil {
		sess.subscribe(pk)
	}
	return pk
}

// OnSubscribed sends the retained messages the new subscriptions match.
func (h *bridge) OnSubscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {
	if sess := h.s.session(cl); sess != nil {
		sess.subscribed(pk, codes)
	}
}

// OnUnsubscribe removes the bindings (or shared consumers) of each filter.
func (h *bridge) OnUnsubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if sess := h.s.session(cl); sess != nil {
		sess.unsubscribe(pk)
	}
	return pk
}

// OnPacketRead takes the acknowledgements of Parley's own deliveries (PUBACK, PUBREC, PUBCOMP
// carry our packet identifiers, which mochi's in-flight table does not know). The packet mochi
// goes on to process is then a PUBACK for identifier 0, which no flow ever uses, so mochi does
// nothing with it.
func (h *bridge) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
	case packets.Pubrel:
		// An inbound QoS 2 flow ends: its record goes.
		if sess := h.s.session(cl); sess != nil {
			sess.released(pk.PacketID)
		}
		return pk, nil
	case packets.Publish:
		if pk.FixedHeader.Qos == 2 {
			if sess := h.s.session(cl); sess != nil {
				sess.newFlow(pk)
			}
		}
		return pk, nil
	default:
		return pk, nil
	}
	if sess := h.s.session(cl); sess != nil {
		sess.acknowledged(pk)
	}
	out := pk
	out.FixedHeader.Type = packets.Puback
	out.PacketID = 0
	return out, nil
}

// OnPacketEncode completes the CONNACK: session present from the core's view (mochi only
// knows sessions it saw in this process), and the MQTT 5 limits Parley enforces.
func (h *bridge) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Pubrec && pk.ReasonCode == packets.ErrPacketIdentifierInUse.Code {
		// mochi answers a QoS 2 PUBLISH sent again before PUBREL (DUP, same identifier) with
		// 0x91; it has it already and does not deliver it twice, which is success: the
		// receiver acknowledges a duplicate with PUBREC as for the first copy [MQTT-4.3.3-10].
		pk.ReasonCode = packets.CodeSuccess.Code
		pk.Properties.ReasonString = ""
		return pk
	}
	if pk.FixedHeader.Type == packets.Publish {
		// A client that asks for no problem information still gets a PUBLISH's user
		// properties [MQTT-3.1.2-29]; mochi would drop them.
		pk.Mods.DisallowProblemInfo = false
		return pk
	}
	if pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		return pk
	}
	if sess := h.s.session(cl); sess != nil {
		pk.SessionPresent = sess.present // [MQTT-3.2.2-2] [MQTT-3.2.2-3]
	}
	pk.Properties.MaximumPacketSize = h.s.cfg.MaxPacketSize
	pk.Properties.TopicAliasMaximum = h.s.m.Options.Capabilities.TopicAliasMaximum
	return pk
}

// OnPacketSent sends the retained messages a SUBSCRIBE asked for once its SUBACK is written,
// so they never overtake it.
func (h *bridge) OnPacketSent(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Suback {
		return
	}
	if sess := h.s.session(cl); sess != nil {
		sess.sendRetained()
	}
}
