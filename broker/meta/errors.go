package meta

import (
	"errors"
	"fmt"
)

// AMQP 0-9-1 reply codes (AMQP 0-9-1 §1.9 constants), as RabbitMQ uses them.
const (
	AccessRefused      uint16 = 403
	NotFound           uint16 = 404
	ResourceLocked     uint16 = 405
	PreconditionFailed uint16 = 406
	FrameError         uint16 = 501
	SyntaxError        uint16 = 502
	CommandInvalid     uint16 = 503
	ChannelError       uint16 = 504
	UnexpectedFrame    uint16 = 505
	ResourceError      uint16 = 506
	NotAllowed         uint16 = 530
	NotImplemented     uint16 = 540
	InternalError      uint16 = 541
)

// CodeName is the constant's name as RabbitMQ prefixes reply texts with it ("NOT_FOUND").
func CodeName(code uint16) string {
	switch code {
	case 200:
		return "OK"
	case 311:
		return "CONTENT_TOO_LARGE"
	case 312:
		return "NO_ROUTE"
	case 313:
		return "NO_CONSUMERS"
	case 320:
		return "CONNECTION_FORCED"
	case 402:
		return "INVALID_PATH"
	case AccessRefused:
		return "ACCESS_REFUSED"
	case NotFound:
		return "NOT_FOUND"
	case ResourceLocked:
		return "RESOURCE_LOCKED"
	case PreconditionFailed:
		return "PRECONDITION_FAILED"
	case FrameError:
		return "FRAME_ERROR"
	case SyntaxError:
		return "SYNTAX_ERROR"
	case CommandInvalid:
		return "COMMAND_INVALID"
	case ChannelError:
		return "CHANNEL_ERROR"
	case UnexpectedFrame:
		return "UNEXPECTED_FRAME"
	case ResourceError:
		return "RESOURCE_ERROR"
	case NotAllowed:
		return "NOT_ALLOWED"
	case NotImplemented:
		return "NOT_IMPLEMENTED"
	case InternalError:
		return "INTERNAL_ERROR"
	}
	return fmt.Sprintf("CODE_%d", code)
}

// IsConnectionError reports whether RabbitMQ closes the whole connection (rather than the
// channel) for this code: AMQP 0-9-1 §1.9 marks these "connection" exceptions.
func IsConnectionError(code uint16) bool {
	switch code {
	case 320, 402, FrameError, SyntaxError, CommandInvalid, ChannelError, UnexpectedFrame,
		ResourceError, NotAllowed, NotImplemented, InternalError:
		return true
	}
	return false
}

// Error is a protocol error with RabbitMQ's reply code and text.
type Error struct {
	Code uint16
	Text string // without the "NOT_FOUND - " prefix
}

// Error is RabbitMQ's full reply text: "NOT_FOUND - no queue 'x' in vhost '/'".
func (e *Error) Error() string { return CodeName(e.Code) + " - " + e.Text }

// Errorf builds an *Error.
func Errorf(code uint16, format string, args ...any) *Error {
	return &Error{Code: code, Text: fmt.Sprintf(format, args...)}
}

// Sentinel errors for vhost management, which AMQP clients never see as reply codes.
var (
	ErrVHostExists = errors.New("vhost already exists")
	ErrNoVHost     = errors.New("no such vhost")
)

// rs is RabbitMQ's rabbit_misc:rs/1, how a resource appears in reply texts.
func rs(kind, name, vhost string) string {
	return fmt.Sprintf("%s '%s' in vhost '%s'", kind, name, vhost)
}

func notFound(kind, name, vhost string) *Error {
	return Errorf(NotFound, "no %s '%s' in vhost '%s'", kind, name, vhost)
}

func lockedQueue(name, vhost string) *Error {
	return Errorf(ResourceLocked, "cannot obtain exclusive access to locked %s. It could be originally "+
		"declared on another connection or the exclusive property value does not match that of the "+
		"original declaration.", rs("queue", name, vhost))
}

func defaultExchangeRefused() *Error {
	return Errorf(AccessRefused, "operation not permitted on the default exchange")
}
