// Package message owns the Message: the one representation of a published message that every
// protocol adapter produces and consumes and that every queue holds. The AMQP 0-9-1 basic
// properties are the canonical superset (DESIGN.md §2); MQTT and STOMP map onto them.
//
// A Message is immutable once published: the body and properties are shared by every queue the
// message is routed to and by every consumer it is delivered to, never copied.
package message
