package amqp091

import (
	"errors"
	"fmt"

	"github.com/parleymq/parley/protocol/amqp091/wire"
	"github.com/parleymq/parley/protocol/auth"
)

// errBadMechanism: the client chose a mechanism we did not offer. RabbitMQ raises 503
// COMMAND_INVALID while starting, which closes the socket without a connection.close.
var errBadMechanism = errors.New("amqp091: unknown authentication mechanism")

const (
	permConfigure = auth.Configure
	permWrite     = auth.Write
	permRead      = auth.Read
)

// authenticate runs SASL PLAIN or AMQPLAIN (RabbitMQ's rabbit_auth_mechanism_plain and
// rabbit_auth_mechanism_amqplain) and logs the user in.
func (c *conn) authenticate(mechanism string, response []byte) error {
	var user, pass string
	switch mechanism {
	case "PLAIN":
		u, p, err := auth.ParsePlain(response)
		if err != nil {
			return fmt.Errorf("SASL PLAIN: %w: %w", errBadMechanism, err)
		}
		user, pass = u, p
	case "AMQPLAIN":
		t, err := wire.ReadTableBody(response)
		if err != nil {
			return fmt.Errorf("SASL AMQPLAIN: %w: %w", errBadMechanism, err)
		}
		var ok1, ok2 bool
		user, ok1 = tableString(t["LOGIN"])
		pass, ok2 = tableString(t["PASSWORD"])
		if !ok1 || !ok2 {
			return fmt.Errorf("SASL AMQPLAIN: LOGIN or PASSWORD missing: %w", errBadMechanism)
		}
	default:
		return fmt.Errorf("%w '%s'", errBadMechanism, mechanism)
	}
	u, err := c.s.users.Authenticate(user, pass, c.nc.RemoteAddr())
	if err != nil {
		return fmt.Errorf("%s login refused: %w", mechanism, err)
	}
	c.user, c.userName = u, u.Name
	return nil
}

func tableString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		return string(x), true
	}
	return "", false
}

// openVHost handles connection.open's vhost: it must exist and the user must have
// permissions in it (530 NOT_ALLOWED otherwise, RabbitMQ's texts).
func (c *conn) openVHost(name string) *amqpError {
	v, ok := c.s.b.VHost(name)
	if !ok {
		return newError(notAllowed, "vhost %s not found", name)
	}
	if !c.s.users.CanAccessVHost(c.userName, name) {
		return newError(notAllowed, "%s", auth.VHostRefused(c.userName, name))
	}
	c.vhost, c.vhostName = v, name
	return nil
}

// check tests a permission; a refusal is 403 ACCESS_REFUSED with RabbitMQ's text.
func (c *conn) check(kind auth.Access, resourceKind, name string) error {
	err := c.s.users.Check(c.userName, c.vhostName, kind, resourceKind, name)
	if err == nil {
		return nil
	}
	return newError(accessRefused, "%s", err.Error())
}
