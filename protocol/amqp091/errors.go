package amqp091

import (
	"errors"
	"fmt"

	"github.com/parleymq/parley/broker/meta"
)

// Reply codes, AMQP 0-9-1 §1.1 (amqp0-9-1.xml constants).
const (
	replySuccess       = 200
	contentTooLarge    = 311
	noRoute            = 312
	noConsumers        = 313
	connectionForced   = 320
	invalidPath        = 402
	accessRefused      = 403
	notFound           = 404
	resourceLocked     = 405
	preconditionFailed = 406
	frameError         = 501
	syntaxError        = 502
	commandInvalid     = 503
	channelError       = 504
	unexpectedFrame    = 505
	resourceError      = 506
	notAllowed         = 530
	notImplemented     = 540
	internalError      = 541
)

// replyName is the constant's name as RabbitMQ prefixes it to reply texts.
func replyName(code uint16) string {
	switch code {
	case replySuccess:
		return "REPLY_SUCCESS"
	case contentTooLarge:
		return "CONTENT_TOO_LARGE"
	case noRoute:
		return "NO_ROUTE"
	case noConsumers:
		return "NO_CONSUMERS"
	case connectionForced:
		return "CONNECTION_FORCED"
	case invalidPath:
		return "INVALID_PATH"
	case accessRefused:
		return "ACCESS_REFUSED"
	case notFound:
		return "NOT_FOUND"
	case resourceLocked:
		return "RESOURCE_LOCKED"
	case preconditionFailed:
		return "PRECONDITION_FAILED"
	case frameError:
		return "FRAME_ERROR"
	case syntaxError:
		return "SYNTAX_ERROR"
	case commandInvalid:
		return "COMMAND_INVALID"
	case channelError:
		return "CHANNEL_ERROR"
	case unexpectedFrame:
		return "UNEXPECTED_FRAME"
	case resourceError:
		return "RESOURCE_ERROR"
	case notAllowed:
		return "NOT_ALLOWED"
	case notImplemented:
		return "NOT_IMPLEMENTED"
	case internalError:
		return "INTERNAL_ERROR"
	}
	return "INTERNAL_ERROR"
}

// isHard reports whether a reply code is a connection exception. AMQP 0-9-1 §1.1 marks each
// constant soft-error or hard-error; RabbitMQ follows it (rabbit_framing amqp_exception).
func isHard(code uint16) bool {
	switch code {
	case contentTooLarge, noRoute, noConsumers, accessRefused, notFound, resourceLocked, preconditionFailed:
		return false
	}
	return true
}

// amqpError is an AMQP exception: the reply code, RabbitMQ's full reply text ("NOT_FOUND -
// no queue 'x' in vhost '/'"), and the method that failed (zero when none).
type amqpError struct {
	code     uint16
	text     string
	classID  uint16
	methodID uint16
}

func (e *amqpError) Error() string { return e.text }

// newError builds an exception with RabbitMQ's text form "NAME - explanation".
func newError(code uint16, format string, args ...any) *amqpError {
	return &amqpError{code: code, text: replyName(code) + " - " + fmt.Sprintf(format, args...)}
}

// asAMQPError maps any error onto an exception. Core errors (*meta.Error) carry their own code
// and full text; anything else is a bug or an I/O failure and becomes 541 INTERNAL_ERROR.
func asAMQPError(err error) *amqpError {
	var ae *amqpError
	if errors.As(err, &ae) {
		return ae
	}
	var me *meta.Error
	if errors.As(err, &me) {
		return &amqpError{code: uint16(me.Code), text: me.Error()}
	}
	return newError(internalError, "%s", err.Error())
}

// withMethod records the failing method on an exception, for close's class-id/method-id.
func (e *amqpError) withMethod(classID, methodID uint16) *amqpError {
	if e.classID == 0 && e.methodID == 0 {
		c := *e
		c.classID, c.methodID = classID, methodID
		return &c
	}
	return e
}
