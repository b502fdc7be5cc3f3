package integration

import (
	"fmt"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Durable exchanges, queues, bindings and confirmed persistent messages survive a clean restart
// and a kill -9; transient queues and non-persistent messages do not.
func TestDurabilityAcrossRestart(t *testing.T) {
	for _, mode := range []string{"restart", "kill"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := StartParley(t)
			s.SkipIfExternal(t, "it restarts the broker")
			c, err := amqp.Dial(s.URL)
			if err != nil {
				t.Fatal(err)
			}
			ch := channel(t, c)
			x, dq, tq := Name(t, "x"), Name(t, "durable"), Name(t, "transient")
			if err := ch.ExchangeDeclare(x, "direct", true, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := ch.QueueDeclare(dq, true, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := ch.QueueDeclare(tq, false, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
			mustBind(t, ch, dq, "k", x, nil)
			publishConfirmed(t, ch, x, "k",
				amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("persistent")},
				amqp.Publishing{DeliveryMode: amqp.Transient, Body: []byte("transient")})
			c.Close()
			if mode == "kill" {
				s.Kill()
			}
			s.Restart()

			c2 := dial(t, s)
			ch2 := channel(t, c2)
			if got := drain(t, ch2, dq); !equalStrings(got, []string{"persistent"}) {
				t.Fatalf("durable queue after %s holds %v, want [persistent]", mode, got)
			}
			publish(t, ch2, x, "k", text("routed after restart"))
			waitMessageCount(t, ch2, dq, 1)
			_, err = ch2.QueueDeclarePassive(tq, false, false, false, false, nil)
			expectChannelClosed(t, c2, ch2, err, amqp.NotFound, fmt.Sprintf("NOT_FOUND - no queue '%s' in vhost '/'", tq))
		})
	}
}
