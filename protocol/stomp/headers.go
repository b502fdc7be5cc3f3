package stomp

import (
	"strconv"
	"time"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/protocol/stomp/wire"
)

// STOMP headers that carry AMQP basic properties (rabbit_stomp_headers.hrl).
const (
	hdrPersistent    = "persistent"
	hdrPriority      = "priority"
	hdrCorrelationID = "correlation-id"
	hdrReplyTo       = "reply-to"
	hdrAMQPMessageID = "amqp-message-id"
	hdrExpiration    = "expiration"
	hdrTimestamp     = "timestamp"
	hdrType          = "type"
	hdrUserID        = "user-id"
	hdrAppID         = "app-id"
	hdrEncoding      = "content-encoding"
	hdrRedelivered   = "redelivered"
)

// notUserHeader: headers that are properties or STOMP control, not AMQP headers.
var notUserHeader = map[string]bool{
	frame.ContentType: true, hdrEncoding: true, hdrPersistent: true, hdrPriority: true,
	hdrCorrelationID: true, hdrReplyTo: true, hdrAMQPMessageID: true, hdrExpiration: true,
	hdrTimestamp: true, hdrType: true, hdrUserID: true, hdrAppID: true,
	frame.Destination: true, frame.Receipt: true, frame.Transaction: true, frame.ContentLength: true,
}

// properties maps a SEND frame's headers onto AMQP basic properties, as
// rabbit_stomp_util:message_properties does; other headers become AMQP headers (strings).
func properties(f *frame.Frame) (message.Properties, error) {
	var p message.Properties
	h := f.Header
	str := func(k string, flag uint16, dst *string) {
		if v, ok := h.Contains(k); ok {
			*dst = v
			p.Flags |= flag
		}
	}
	str(frame.ContentType, message.FlagContentType, &p.ContentType)
	str(hdrEncoding, message.FlagContentEncoding, &p.ContentEncoding)
	str(hdrCorrelationID, message.FlagCorrelationID, &p.CorrelationID)
	str(hdrReplyTo, message.FlagReplyTo, &p.ReplyTo)
	str(hdrAMQPMessageID, message.FlagMessageID, &p.MessageID)
	str(hdrExpiration, message.FlagExpiration, &p.Expiration)
	str(hdrType, message.FlagType, &p.Type)
	str(hdrUserID, message.FlagUserID, &p.UserID)
	str(hdrAppID, message.FlagAppID, &p.AppID)
	if v, ok := h.Contains(hdrPersistent); ok && v == "true" {
		p.Flags |= message.FlagDeliveryMode
		p.DeliveryMode = 2
	}
	if v, ok := h.Contains(hdrPriority); ok {
		n, err := strconv.ParseUint(v, 10, 8)
		if err != nil {
			return p, errorf("Invalid header", "'priority' must be an integer from 0 to 255, not '%s'\n", v)
		}
		p.Flags |= message.FlagPriority
		p.Priority = uint8(n)
	}
	if v, ok := h.Contains(hdrTimestamp); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return p, errorf("Invalid header", "'timestamp' must be an integer, not '%s'\n", v)
		}
		p.Flags |= message.FlagTimestamp
		p.Timestamp = n
	}
	if p.Flags&message.FlagExpiration != 0 {
		// rabbit_basic:parse_expiration/1, as the AMQP adapter checks it.
		n, err := strconv.ParseInt(p.Expiration, 10, 64)
		if err != nil || n < 0 {
			return p, errorf("precondition_failed", "invalid expiration '%s'", p.Expiration)
		}
	}
	for i := 0; i < h.Len(); i++ {
		k, v := h.GetAt(i)
		if notUserHeader[k] {
			continue
		}
		if p.Headers == nil {
			p.Headers = message.Table{}
		}
		if _, dup := p.Headers[k]; !dup { // STOMP 1.2: the first of repeated headers counts
			p.Headers[k] = v
		}
	}
	if p.Headers != nil {
		p.Flags |= message.FlagHeaders
	}
	return p, nil
}

// appendProperties appends the MESSAGE headers that carry a message's properties and its
// AMQP headers (rabbit_stomp_util:message_headers): strings, numbers and booleans as text;
// tables, arrays and binary values have no STOMP form and are left out.
func appendProperties(b []byte, p *message.Properties, v wire.Version) []byte {
	add := func(flag uint16, k, val string) {
		if p.Flags&flag != 0 {
			b = wire.AppendHeader(b, k, val, v)
		}
	}
	add(message.FlagContentType, frame.ContentType, p.ContentType)
	add(message.FlagContentEncoding, hdrEncoding, p.ContentEncoding)
	if p.Flags&message.FlagDeliveryMode != 0 && p.DeliveryMode == 2 {
		b = wire.AppendHeader(b, hdrPersistent, "true", v)
	}
	if p.Flags&message.FlagPriority != 0 {
		b = wire.AppendHeader(b, hdrPriority, strconv.Itoa(int(p.Priority)), v)
	}
	add(message.FlagCorrelationID, hdrCorrelationID, p.CorrelationID)
	add(message.FlagReplyTo, hdrReplyTo, p.ReplyTo)
	add(message.FlagMessageID, hdrAMQPMessageID, p.MessageID)
	add(message.FlagExpiration, hdrExpiration, p.Expiration)
	if p.Flags&message.FlagTimestamp != 0 {
		b = wire.AppendHeader(b, hdrTimestamp, strconv.FormatInt(p.Timestamp, 10), v)
	}
	add(message.FlagType, hdrType, p.Type)
	add(message.FlagUserID, hdrUserID, p.UserID)
	add(message.FlagAppID, hdrAppID, p.AppID)
	for k, val := range p.Headers {
		if s, ok := headerText(val); ok {
			b = wire.AppendHeader(b, k, s, v)
		}
	}
	return b
}

func headerText(val any) (string, bool) {
	switch x := val.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	case time.Time:
		return strconv.FormatInt(x.Unix(), 10), true
	}
	if n, ok := message.Int(val); ok {
		return strconv.FormatInt(n, 10), true
	}
	return "", false
}

// queueArgTypes are the x- headers RabbitMQ's STOMP plugin turns into queue arguments
// (rabbit_stomp_util:build_arguments) and their AMQP types.
var queueArgTypes = map[string]byte{
	"x-dead-letter-exchange":          's',
	"x-dead-letter-routing-key":       's',
	"x-expires":                       'l',
	"x-max-length":                    'l',
	"x-max-length-bytes":              'l',
	"x-max-priority":                  'l',
	"x-message-ttl":                   'l',
	"x-overflow":                      's',
	"x-queue-type":                    's',
	"x-queue-mode":                    's',
	"x-queue-master-locator":          's',
	"x-single-active-consumer":        'b',
	"x-delivery-limit":                'l',
	"x-max-age":                       's',
	"x-stream-max-segment-size-bytes": 'l',
}

// queueArgs collects queue arguments from a frame's headers.
func queueArgs(h *frame.Header) (message.Table, error) {
	var args message.Table
	for i := 0; i < h.Len(); i++ {
		k, v := h.GetAt(i)
		t, ok := queueArgTypes[k]
		if !ok {
			continue
		}
		if args == nil {
			args = message.Table{}
		}
		if _, dup := args[k]; dup {
			continue
		}
		switch t {
		case 's':
			args[k] = v
		case 'l':
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, errorf("Invalid header", "'%s' must be an integer, not '%s'\n", k, v)
			}
			args[k] = n
		case 'b':
			args[k] = v == "true"
		}
	}
	return args, nil
}

// boolHeader reads a true/false header with a default.
func boolHeader(h *frame.Header, k string, def bool) bool {
	v, ok := h.Contains(k)
	if !ok {
		return def
	}
	return v == "true"
}
