package mqtt

import (
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/parleymq/parley/broker"
	"github.com/parleymq/parley/broker/message"
)

// Headers Parley adds to messages published over MQTT. x-mqtt-publish-qos is RabbitMQ's; it
// gives the QoS an MQTT subscriber receives at most. The others let MQTT features work across
// the core: no-local needs the publisher, retain-as-published the retain flag.
const (
	hdrPublishQoS = "x-mqtt-publish-qos"
	hdrClientID   = "x-mqtt-client-id"
	hdrRetain     = "x-mqtt-retain"
	hdrPayloadFmt = "x-mqtt-payload-format"
	// hdrExpiresAt is set on the stored copy of a retained message with a message expiry:
	// when it expires, Unix ms, so the interval counts down while it is retained (and across
	// a restart) and an expired one is no longer sent [MQTT-3.3.2-5].
	hdrExpiresAt = "x-mqtt-expires-at"
)

// publish hands a PUBLISH to the core and, for QoS 1 and 2, waits until every queue it
// reached has accepted it (persistent messages: written and fsynced; a QoS 1 publish to queues
// that accept at once, none durable or limited with reject-publish, is accepted when it is in
// their inboxes). The reader waits, so the client's next packet is read only after that:
// back-pressure per client (with flow.go's and the queues' full inboxes).
func (x *session) publish(pk *packets.Packet) packets.Code {
	m := x.messageFrom(pk)
	if pk.FixedHeader.Retain {
		// Stored (durably) before the publish is acknowledged; an empty payload clears the
		// topic's retained message and is not itself retained [MQTT-3.3.1-5] [MQTT-3.3.1-10].
		keep := retainedCopy(m, time.Now())
		if len(pk.Payload) == 0 {
			keep = nil
		}
		if err := x.v.SetRetained(pk.TopicName, keep); err != nil {
			x.s.log.Warn("mqtt retained message not stored", zap.String("client_id", x.clientID), zap.Error(err))
			return packets.ErrImplementationSpecificError
		}
	}
	if pk.FixedHeader.Qos == 0 {
		if _, err := x.v.Publish(m, nil, &x.scratch); err != nil {
			x.s.log.Info("mqtt publish refused", zap.String("client_id", x.clientID), zap.Error(err))
			return packets.ErrImplementationSpecificError
		}
		x.flow.Note(x.scratch.Queues())
		return packets.CodeSuccess
	}
	if pk.FixedHeader.Qos == 2 && x.persistent && x.q != nil && !x.prepareQoS2(pk.PacketID, m) {
		return packets.ErrImplementationSpecificError
	}
	res := make(chan bool, 1)
	routed, err := x.v.Publish(m, func(ok bool) { res <- ok }, &x.scratch)
	if err != nil {
		x.s.log.Info("mqtt publish refused", zap.String("client_id", x.clientID), zap.Error(err))
		return packets.ErrImplementationSpecificError
	}
	x.flow.Note(x.scratch.Queues())
	// A QoS 1 publish whose queues are all transient and cannot refuse it (Queue.AcceptsAtOnce)
	// is the core's once it is in their inboxes: its confirm can only be positive, and waiting
	// for it cost a hand-off to each queue's goroutine and back for every message (in QoS 1
	// fan-in about a context switch a message). The PUBACK still goes out after this, at the
	// end of the burst (guardConn.hold).
	if pk.FixedHeader.Qos != 1 || !acceptedAtOnce(x.scratch.Queues()) {
		if !<-res {
			// A queue refused it (x-overflow reject-publish) or the store failed.
			return packets.ErrQuotaExceeded
		}
	}
	if !routed && !pk.FixedHeader.Retain {
		return packets.CodeNoMatchingSubscribers
	}
	return packets.CodeSuccess
}

// acceptedAtOnce reports whether every queue a publish reached accepts it once it is in its
// inbox (none is durable, remote or limited with reject-publish).
func acceptedAtOnce(qs []*broker.Queue) bool {
	for _, q := range qs {
		if !q.AcceptsAtOnce() {
			return false
		}
	}
	return true
}

// retainedCopy is m as stored for a retained message: with hdrExpiresAt when it has an
// expiration, so the copy (not m, which is also published) knows its deadline.
func retainedCopy(m *message.Message, now time.Time) *message.Message {
	if m.Properties.Flags&message.FlagExpiration == 0 {
		return m
	}
	ms, err := strconv.ParseInt(m.Properties.Expiration, 10, 64)
	if err != nil || ms < 0 {
		return m
	}
	c := *m
	h := make(message.Table, len(m.Properties.Headers)+1)
	for k, v := range m.Properties.Headers {
		h[k] = v
	}
	h[hdrExpiresAt] = now.UnixMilli() + ms
	c.Properties.Headers = h
	c.Properties.Flags |= message.FlagHeaders
	return &c
}

// retainedLeft is the time a retained message has left: ok false once it has expired;
// left 0 for a message without an expiry.
func retainedLeft(m *message.Message, now time.Time) (left uint32, ok bool) {
	at, has := message.Int(m.Properties.Headers[hdrExpiresAt])
	if !has {
		return 0, true
	}
	ms := at - now.UnixMilli()
	if ms <= 0 {
		return 0, false
	}
	return uint32(min((ms+999)/1000, 0xFFFFFFFF)), true
}

// refusePublish answers a publish the core did not take: MQTT 5 gets PUBACK or PUBREC with
// the reason code [MQTT-3.4.2-1]; MQTT 3.1.1 has no negative acknowledgement, so the connection
// is closed, which tells the client the message was not accepted. 0x10 (no matching
// subscribers) is written here too: mochi's encoder drops a reason code below 0x80 unless the
// packet has properties, so the reason string goes with it.
func (x *session) refusePublish(pk packets.Packet, code packets.Code) {
	if pk.FixedHeader.Qos == 0 {
		return
	}
	if pk.FixedHeader.Qos == 2 {
		// Not accepted: its pending record (prepareQoS2) must not make a resend a duplicate.
		x.setStateLater(packetIDKey(stateInPrefix, pk.PacketID), nil)
	}
	if x.version < 5 && code.Code >= packets.ErrUnspecifiedError.Code {
		x.cl.Stop(code)
		return
	}
	t := byte(packets.Puback)
	if pk.FixedHeader.Qos == 2 {
		t = packets.Pubrec
	}
	_ = x.cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: t},
		PacketID:    pk.PacketID,
		ReasonCode:  code.Code,
		Properties:  packets.Properties{ReasonString: code.Reason},
	})
}

// messageFrom maps a PUBLISH onto a core message (DESIGN.md §3): QoS 1 and 2 are persistent,
// MQTT 5 properties become AMQP properties and headers.
func (x *session) messageFrom(pk *packets.Packet) *message.Message {
	m := &message.Message{
		Exchange:   x.s.cfg.Exchange,
		RoutingKey: x.routingKeyOf(pk.TopicName),
		Body:       pk.Payload,
	}
	p := &m.Properties
	p.Flags = message.FlagDeliveryMode | message.FlagHeaders
	p.DeliveryMode = 1
	if pk.FixedHeader.Qos > 0 {
		p.DeliveryMode = 2
	}
	if q := pk.FixedHeader.Qos; q < 2 && !pk.FixedHeader.Retain &&
		(x.version < 5 || (len(pk.Properties.User) == 0 && !pk.Properties.PayloadFormatFlag)) {
		// The headers of a plain QoS 0 or 1 publish are the same for every message of the
		// session: one table per QoS, shared by its messages. The core never changes a
		// message's headers in place (one message goes to every queue it was routed to;
		// dead-lettering and a retained copy make new tables), and nothing here adds to this
		// one (inboundProperties writes headers only for user properties and the payload
		// format; a QoS 2 publish gets its token, a retained one its flag, in a table of its
		// own). A new table per message was a map allocation and two inserts: about 6 % of
		// Parley's CPU in QoS 0 fan-in.
		h := x.plainHdrs[q]
		if h == nil {
			h = message.Table{hdrPublishQoS: q, hdrClientID: x.clientID}
			x.plainHdrs[q] = h
		}
		p.Headers = h
		if x.version == 5 {
			inboundProperties(m, pk.Properties)
		}
		return m
	}
	h := message.Table{hdrPublishQoS: uint8(pk.FixedHeader.Qos), hdrClientID: x.clientID}
	if pk.FixedHeader.Retain {
		h[hdrRetain] = true
	}
	p.Headers = h
	if x.version == 5 {
		inboundProperties(m, pk.Properties)
	}
	return m
}

// routingKeyOf maps a PUBLISH's topic to its routing key, remembering the last one: a publisher
// mostly publishes to one topic, or a few, in a row. Deep goroutine only (publish).
func (x *session) routingKeyOf(topic string) string {
	if topic != x.inTopic { // the zero values agree: "" maps to ""
		x.inTopic, x.inKey = topic, TopicToRoutingKey(topic)
	}
	return x.inKey
}

// inboundProperties maps MQTT 5 properties onto AMQP properties.
func inboundProperties(m *message.Message, pr packets.Properties) {
	p := &m.Properties
	for _, u := range pr.User {
		p.Headers[u.Key] = u.Val // a repeated key keeps its last value
	}
	if pr.ContentType != "" {
		p.Flags |= message.FlagContentType
		p.ContentType = pr.ContentType
	}
	if pr.ResponseTopic != "" {
		// The reply-to is the response topic as a routing key on the same exchange, so an
		// AMQP responder publishes its answer to amq.topic with routing key = reply-to.
		p.Flags |= message.FlagReplyTo
		p.ReplyTo = TopicToRoutingKey(pr.ResponseTopic)
	}
	if len(pr.CorrelationData) > 0 {
		p.Flags |= message.FlagCorrelationID
		p.CorrelationID = string(pr.CorrelationData)
	}
	if pr.MessageExpiryInterval > 0 {
		p.Flags |= message.FlagExpiration
		p.Expiration = strconv.FormatUint(uint64(pr.MessageExpiryInterval)*1000, 10)
	}
	if pr.PayloadFormatFlag {
		p.Headers[hdrPayloadFmt] = pr.PayloadFormat
	}
}

// inbound is what a delivery carries about its MQTT origin.
type inbound struct {
	qos    byte
	origin string
	retain bool
}

// inboundInfo reads the publish QoS (a message from AMQP is QoS 1 when persistent, as in
// RabbitMQ), the publishing client and the retain flag.
func inboundInfo(m *message.Message) inbound {
	var in inbound
	h := m.Properties.Headers
	if n, ok := message.Int(h[hdrPublishQoS]); ok && n >= 0 && n <= 2 {
		in.qos = byte(n)
	} else if m.Persistent() {
		in.qos = 1
	}
	in.origin, _ = h[hdrClientID].(string)
	in.retain, _ = h[hdrRetain].(bool)
	return in
}

// outboundProperties maps AMQP properties onto MQTT 5 properties: headers other than Parley's
// own become user properties.
func outboundProperties(pr *packets.Properties, m *message.Message) {
	p := &m.Properties
	if p.Flags&message.FlagContentType != 0 {
		pr.ContentType = p.ContentType
	}
	if p.Flags&message.FlagReplyTo != 0 && p.ReplyTo != "" {
		pr.ResponseTopic = RoutingKeyToTopic(p.ReplyTo)
	}
	if p.Flags&message.FlagCorrelationID != 0 && p.CorrelationID != "" {
		pr.CorrelationData = []byte(p.CorrelationID)
	}
	if p.Flags&message.FlagExpiration != 0 {
		if ms, err := strconv.ParseUint(p.Expiration, 10, 64); err == nil && ms > 0 {
			pr.MessageExpiryInterval = uint32(min((ms+999)/1000, 0xFFFFFFFF))
		}
	}
	for k, v := range p.Headers {
		switch k {
		case hdrPublishQoS, hdrClientID, hdrRetain, hdrExpiresAt, hdrQoS2Token:
			continue
		case hdrPayloadFmt:
			if b, ok := message.Int(v); ok {
				pr.PayloadFormat, pr.PayloadFormatFlag = byte(b), true
			}
			continue
		}
		s, ok := headerString(v)
		if ok {
			pr.User = append(pr.User, packets.UserProperty{Key: k, Val: s})
		}
	}
}

// headerString renders a header value as a user property value; tables and arrays have no
// faithful string form and are left out.
func headerString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		if utf8.Valid(x) {
			return string(x), true
		}
		return "", false
	case bool, int8, uint8, int16, uint16, int32, uint32, int64, float32, float64:
		return fmt.Sprint(x), true
	}
	return "", false
}

// willMessage is the will as a core message. props are the CONNECT packet's will properties
// (mochi's Will keeps only the delay and the user properties of them): content type, response
// topic, correlation data, message expiry and payload format map as a PUBLISH's do
// [MQTT-3.1.3-10] (the will delay is the session's business, not the message's).
func willMessage(exchange, clientID string, w mochi.Will, props packets.Properties) *message.Message {
	m := &message.Message{Exchange: exchange, RoutingKey: TopicToRoutingKey(w.TopicName), Body: w.Payload}
	p := &m.Properties
	p.Flags = message.FlagDeliveryMode | message.FlagHeaders
	p.DeliveryMode = 1
	if w.Qos > 0 {
		p.DeliveryMode = 2
	}
	p.Headers = message.Table{hdrPublishQoS: uint8(w.Qos), hdrClientID: clientID}
	if w.Retain {
		p.Headers[hdrRetain] = true
	}
	props.User = w.User
	inboundProperties(m, props)
	return m
}

// publishDirect handles the common PUBLISH itself rather than through mochi's processPublish
// (InjectPacket): QoS 0 or 1, not retained, without a topic alias, from a client allowed to
// publish, while mochi's in-flight table of the client is empty. It returns false, having
// done nothing, for every other PUBLISH, which mochi handles as before (refusals included).
//
// For such a packet processPublish does nothing Parley needs besides the bridge's OnPublish
// and the PUBACK: its in-flight table holds only inbound QoS 2 flows (Parley's deliveries use
// their own identifiers, outbound.go), so while it is empty the receive quota is whole and no
// identifier can collide [MQTT-4.3.3-10]; a QoS 1 publish's in-flight entry is set and deleted
// again around the PUBACK, and its receive quota taken and given back; its retained-message
// store and subscriber fan-out never run for Parley (every publish is "ignore"); and no other
// hook is installed. Skipping it was about 15 % of Parley's CPU in QoS 1 fan-in (an in-flight
// map insert and delete, a global lock for each of two session look-ups, the ACL hook, the
// ack's encoding into a new buffer; docs/performance.md, "MQTT fan-in, second pass"). mochi's
// packet counters (its $SYS topics, which Parley does not serve) do not count these packets.
func (c *conn) publishDirect(pk *packets.Packet) bool {
	x, cl := c.g.sess, c.cl
	fh := &pk.FixedHeader
	caps := c.s.m.Options.Capabilities
	if x == nil || fh.Qos > 1 || fh.Qos > caps.MaximumQos || fh.Retain ||
		pk.Properties.TopicAliasFlag || pk.Properties.TopicAlias != 0 {
		return false
	}
	// The checks processPacket and processPublish make first; a PUBLISH that fails one goes
	// to mochi, which refuses it as before.
	if pk.PublishValidate(caps.TopicAliasMaximum) != packets.CodeSuccess ||
		!mochi.IsValidFilter(pk.TopicName, true) || cl.State.Inflight.Len() != 0 || !x.canPublish() {
		return false
	}
	if !x.onPublish(pk) {
		return true // refused and answered (refusePublish)
	}
	if fh.Qos == 1 && !cl.Closed() {
		// mochi's PUBACK for an accepted publish, in either version: no reason code (success)
		// and no properties (NoInheritedPropertiesOnAck) [MQTT-3.4.2-1] [MQTT-4.3.2-4]. Held
		// with the burst's other writes (guardConn.hold); a failed write ends the connection,
		// which its reader sees.
		c.ack = [4]byte{packets.Puback << 4, 2, byte(pk.PacketID >> 8), byte(pk.PacketID)}
		_, _ = c.g.Write(c.ack[:])
	}
	return true
}
