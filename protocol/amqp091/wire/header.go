package wire

import "fmt"

// Basic property flags: bit 15 is the first property. AMQP 0-9-1 §4.2.6.1 and the spec's basic
// class property list. The values equal broker/message's Flag* constants.
const (
	FlagContentType     uint16 = 0x8000
	FlagContentEncoding uint16 = 0x4000
	FlagHeaders         uint16 = 0x2000
	FlagDeliveryMode    uint16 = 0x1000
	FlagPriority        uint16 = 0x0800
	FlagCorrelationID   uint16 = 0x0400
	FlagReplyTo         uint16 = 0x0200
	FlagExpiration      uint16 = 0x0100
	FlagMessageID       uint16 = 0x0080
	FlagTimestamp       uint16 = 0x0040
	FlagType            uint16 = 0x0020
	FlagUserID          uint16 = 0x0010
	FlagAppID           uint16 = 0x0008
	// flagClusterID is the deprecated "reserved" (cluster-id) property. It is parsed and
	// dropped on input and never written.
	flagClusterID uint16 = 0x0004
	// flagContinuation marks another 16-bit flag word. AMQP 0-9-1 §4.2.6.1.
	flagContinuation uint16 = 0x0001

	// propertyFlagsMask is every flag Properties can carry.
	propertyFlagsMask = FlagContentType | FlagContentEncoding | FlagHeaders | FlagDeliveryMode |
		FlagPriority | FlagCorrelationID | FlagReplyTo | FlagExpiration | FlagMessageID |
		FlagTimestamp | FlagType | FlagUserID | FlagAppID
)

// Properties are the basic class content properties. Its fields, names and types are exactly
// those of broker/message.Properties so that one converts to the other with a plain Go
// conversion. Flags says which properties are present; a property whose flag is clear is not
// sent, whatever its field holds.
type Properties struct {
	Flags           uint16
	ContentType     string
	ContentEncoding string
	Headers         map[string]any
	DeliveryMode    uint8
	Priority        uint8
	CorrelationID   string
	ReplyTo         string
	Expiration      string
	MessageID       string
	Timestamp       int64
	Type            string
	UserID          string
	AppID           string
}

// ContentHeader is the payload of a content header frame. AMQP 0-9-1 §4.2.6.1.
type ContentHeader struct {
	ClassID    uint16
	Weight     uint16
	BodySize   uint64
	Properties Properties
}

// DecodeContentHeader parses a header frame's payload into h (overwriting all of it). Short
// string properties are newly allocated; a Decoder's DecodeContentHeader interns them instead.
func DecodeContentHeader(payload []byte, h *ContentHeader) error {
	p := parser{b: payload}
	return decodeContentHeader(&p, h)
}

func decodeContentHeader(p *parser, h *ContentHeader) error {
	h.ClassID = p.short()
	h.Weight = p.short()
	h.BodySize = p.longlong()
	flags := p.short()
	if p.bad {
		return fmt.Errorf("content header: truncated: %w", ErrSyntax)
	}
	// A continuation word may follow; the basic class has only 14 properties, so every bit
	// of a further word must be clear.
	for w := flags; w&flagContinuation != 0; {
		w = p.short()
		if p.bad || w&^flagContinuation != 0 {
			return fmt.Errorf("content header: unknown property flags: %w", ErrSyntax)
		}
	}
	pr := &h.Properties
	*pr = Properties{Flags: flags & propertyFlagsMask}
	if flags&FlagContentType != 0 {
		pr.ContentType = p.shortstr()
	}
	if flags&FlagContentEncoding != 0 {
		pr.ContentEncoding = p.shortstr()
	}
	if flags&FlagHeaders != 0 {
		pr.Headers = p.table()
	}
	if flags&FlagDeliveryMode != 0 {
		pr.DeliveryMode = p.octet()
	}
	if flags&FlagPriority != 0 {
		pr.Priority = p.octet()
	}
	if flags&FlagCorrelationID != 0 {
		pr.CorrelationID = p.shortstr()
	}
	if flags&FlagReplyTo != 0 {
		pr.ReplyTo = p.shortstr()
	}
	if flags&FlagExpiration != 0 {
		pr.Expiration = p.shortstr()
	}
	if flags&FlagMessageID != 0 {
		pr.MessageID = p.shortstr()
	}
	if flags&FlagTimestamp != 0 {
		pr.Timestamp = int64(p.longlong())
	}
	if flags&FlagType != 0 {
		pr.Type = p.shortstr()
	}
	if flags&FlagUserID != 0 {
		pr.UserID = p.shortstr()
	}
	if flags&FlagAppID != 0 {
		pr.AppID = p.shortstr()
	}
	if flags&flagClusterID != 0 {
		_ = p.shortstrBytes()
	}
	if flags&0x0002 != 0 {
		// Bit 1 names no property in the basic class.
		return fmt.Errorf("content header: unknown property flag 0x0002: %w", ErrSyntax)
	}
	if p.bad {
		return fmt.Errorf("content header: truncated or malformed properties: %w", ErrSyntax)
	}
	if len(p.b) != 0 {
		return fmt.Errorf("content header: %d trailing octets: %w", len(p.b), ErrSyntax)
	}
	return nil
}

// appendProperties appends the property flags and the present properties, in spec order.
func appendProperties(dst []byte, pr *Properties) []byte {
	if pr == nil {
		return appendShort(dst, 0)
	}
	flags := pr.Flags & propertyFlagsMask
	dst = appendShort(dst, flags)
	if flags&FlagContentType != 0 {
		dst = appendShortstr(dst, pr.ContentType)
	}
	if flags&FlagContentEncoding != 0 {
		dst = appendShortstr(dst, pr.ContentEncoding)
	}
	if flags&FlagHeaders != 0 {
		dst = appendTableLenient(dst, pr.Headers)
	}
	if flags&FlagDeliveryMode != 0 {
		dst = append(dst, pr.DeliveryMode)
	}
	if flags&FlagPriority != 0 {
		dst = append(dst, pr.Priority)
	}
	if flags&FlagCorrelationID != 0 {
		dst = appendShortstr(dst, pr.CorrelationID)
	}
	if flags&FlagReplyTo != 0 {
		dst = appendShortstr(dst, pr.ReplyTo)
	}
	if flags&FlagExpiration != 0 {
		dst = appendShortstr(dst, pr.Expiration)
	}
	if flags&FlagMessageID != 0 {
		dst = appendShortstr(dst, pr.MessageID)
	}
	if flags&FlagTimestamp != 0 {
		dst = appendLonglong(dst, uint64(pr.Timestamp))
	}
	if flags&FlagType != 0 {
		dst = appendShortstr(dst, pr.Type)
	}
	if flags&FlagUserID != 0 {
		dst = appendShortstr(dst, pr.UserID)
	}
	if flags&FlagAppID != 0 {
		dst = appendShortstr(dst, pr.AppID)
	}
	return dst
}
