package auth

import (
	"encoding/binary"
	"fmt"
)

// ParseAMQPlain reads an AMQPLAIN response (RabbitMQ's rabbit_auth_mechanism_amqplain): the
// body of an AMQP field table, without its length prefix, whose LOGIN and PASSWORD entries
// are long strings. Other entries are skipped. The error wraps ErrBadResponse.
func ParseAMQPlain(response []byte) (user, password string, err error) {
	var haveUser, havePass bool
	b := response
	for len(b) > 0 {
		n := int(b[0])
		if len(b) < 1+n+1 {
			return "", "", amqplainError("truncated field table")
		}
		name := string(b[1 : 1+n])
		typ := b[1+n]
		b = b[2+n:]
		size, err := fieldSize(typ, b)
		if err != nil {
			return "", "", err
		}
		if typ == 'S' {
			v := string(b[4:size])
			switch name {
			case "LOGIN":
				user, haveUser = v, true
			case "PASSWORD":
				password, havePass = v, true
			}
		}
		b = b[size:]
	}
	if !haveUser || !havePass {
		return "", "", amqplainError("AMQPLAIN auth info is missing LOGIN or PASSWORD field")
	}
	return user, password, nil
}

func amqplainError(text string) error { return &Error{Kind: ErrBadResponse, Text: text} }

// fieldSize is the encoded size of a field value of type typ at the start of b, by RabbitMQ's
// field-table type codes.
func fieldSize(typ byte, b []byte) (int, error) {
	var size int
	switch typ {
	case 't', 'b', 'B':
		size = 1
	case 's', 'u':
		size = 2
	case 'I', 'i', 'f':
		size = 4
	case 'l', 'd', 'T':
		size = 8
	case 'D':
		size = 5
	case 'V':
		size = 0
	case 'S', 'A', 'F', 'x':
		if len(b) < 4 {
			return 0, amqplainError("truncated field table")
		}
		size = 4 + int(binary.BigEndian.Uint32(b))
	default:
		return 0, amqplainError(fmt.Sprintf("unknown field type %q in AMQPLAIN response", typ))
	}
	if size > len(b) || size < 0 {
		return 0, amqplainError("truncated field table")
	}
	return size, nil
}
