package message

// Table is an AMQP field table. Values have these Go types, matching RabbitMQ's field-table
// type codes: bool, int8, uint8, int16, uint16, int32, uint32, int64, float32, float64,
// string (long string 'S'), []byte (byte array 'x'), []any (array 'A'), time.Time
// (timestamp 'T'), map[string]any (nested table 'F'), nil (void 'V'), and a decimal ('D'):
// Decimal, or the AMQP codec's own decimal type, which the core compares but never interprets.
type Table = map[string]any

// Decimal is an AMQP decimal field value ('D'): Value × 10^-Scale. The core never interprets
// it. AppendBinary also accepts any other struct type with exactly the fields Scale uint8 and
// Value int32 (such as the AMQP codec's own), and DecodeBinary always gives a Decimal, so an
// adapter that has its own decimal type converts a Decimal back when it encodes headers.
type Decimal struct {
	Scale uint8
	Value int32
}

// Property flags: which of the basic properties are present. The bit values are the AMQP
// 0-9-1 basic content-header property flags, so an adapter can pass them straight through.
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
)

// Properties are the AMQP basic properties. Flags says which are present; a field whose flag
// is clear is its zero value and must not be sent.
type Properties struct {
	Flags           uint16
	ContentType     string
	ContentEncoding string
	Headers         Table
	DeliveryMode    uint8 // 1 transient, 2 persistent
	Priority        uint8
	CorrelationID   string
	ReplyTo         string
	Expiration      string // per-message TTL in milliseconds, as a decimal string
	MessageID       string
	Timestamp       int64 // seconds since the Unix epoch
	Type            string
	UserID          string
	AppID           string
}

// Message is a published message. It is immutable once handed to the broker.
type Message struct {
	Exchange   string
	RoutingKey string
	Properties Properties
	Body       []byte
}

// Persistent reports whether the publisher asked for the message to survive a restart
// (delivery-mode 2).
func (m *Message) Persistent() bool {
	return m.Properties.Flags&FlagDeliveryMode != 0 && m.Properties.DeliveryMode == 2
}

// Size is the number of body bytes, the figure queue length limits count.
func (m *Message) Size() int { return len(m.Body) }
