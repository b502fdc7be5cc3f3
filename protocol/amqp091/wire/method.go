package wire

import (
	"encoding/binary"
	"fmt"
)

// Method is one AMQP 0-9-1 method: a generated struct per method of RabbitMQ's extended spec.
type Method interface {
	ClassID() uint16
	MethodID() uint16
	// Name is the method's name as the spec spells it: "basic.publish", "connection.start-ok".
	Name() string
	// HasContent reports whether a content header and body follow the method
	// (basic.publish, basic.return, basic.deliver, basic.get-ok).
	HasContent() bool
	// Synchronous reports the spec's synchronous="1": the peer answers with a reply method.
	Synchronous() bool
	// Append appends class-id, method-id and the arguments. It cannot fail: short strings
	// longer than 255 octets are truncated and table values of unsupported types are written
	// as void, so callers validate both beforehand.
	Append(dst []byte) []byte
	// Decode parses the arguments (the payload after class-id and method-id) into the struct.
	// Strings and tables are copied: the struct does not alias args.
	Decode(args []byte) error
}

// decodable is implemented by every generated method; decode reads the arguments with a parser
// that may intern short strings.
type decodable interface {
	Method
	decode(p *parser)
}

// DecodeMethod parses a method frame payload (class-id, method-id, arguments) into a newly
// allocated struct. AMQP 0-9-1 §4.2.4.
func DecodeMethod(payload []byte) (Method, error) {
	classID, methodID, err := methodIDs(payload)
	if err != nil {
		return nil, err
	}
	m := newMethod(classID, methodID)
	if m == nil {
		return nil, unknownMethod(classID, methodID)
	}
	p := parser{b: payload[4:]}
	m.decode(&p)
	if err := p.done(m.Name()); err != nil {
		return nil, err
	}
	return m, nil
}

func methodIDs(payload []byte) (classID, methodID uint16, err error) {
	if len(payload) < 4 {
		return 0, 0, fmt.Errorf("method frame of %d octets has no class-id and method-id: %w", len(payload), ErrSyntax)
	}
	return binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:]), nil
}

func unknownMethod(classID, methodID uint16) error {
	return fmt.Errorf("class %d method %d: %w", classID, methodID, ErrUnknownMethod)
}

// Decoder decodes method frames without allocating in steady state: it keeps one struct per
// method and reuses it for every frame of that method, and it interns short strings (exchange
// names, routing keys, consumer tags, property values) so that decoding basic.publish and its
// content header allocates nothing once the names have been seen. The zero Decoder is ready to
// use; it is not safe for concurrent use (one per connection reader).
type Decoder struct {
	methods methodSet
	intern  map[string]string
	// p lives in the Decoder because decode is called through an interface: a parser on the
	// stack would escape and cost an allocation per frame.
	p parser
}

// Decode parses a method frame payload. The returned Method is owned by the Decoder and valid
// until the next call to Decode; copy what must outlive it. Tables and long strings are freshly
// allocated per call and may be kept; []byte fields (SASL responses) reuse the previous call's
// storage.
func (d *Decoder) Decode(payload []byte) (Method, error) {
	classID, methodID, err := methodIDs(payload)
	if err != nil {
		return nil, err
	}
	m := d.methods.get(classID, methodID)
	if m == nil {
		return nil, unknownMethod(classID, methodID)
	}
	if d.intern == nil {
		d.intern = make(map[string]string)
	}
	d.p = parser{b: payload[4:], intern: d.intern}
	m.decode(&d.p)
	err = d.p.done(m.Name())
	d.p.b = nil // do not pin the frame buffer
	if err != nil {
		return nil, err
	}
	return m, nil
}

// DecodeContentHeader is DecodeContentHeader with the Decoder's string interning: property
// values that repeat from message to message (content-type, app-id, reply-to) are not
// allocated again. Headers tables are allocated per call.
func (d *Decoder) DecodeContentHeader(payload []byte, h *ContentHeader) error {
	if d.intern == nil {
		d.intern = make(map[string]string)
	}
	d.p = parser{b: payload, intern: d.intern}
	err := decodeContentHeader(&d.p, h)
	d.p.b = nil
	return err
}
