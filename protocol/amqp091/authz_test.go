package amqp091

import (
	"errors"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/parleymq/parley/protocol/auth"
)

// The channel caches the exchanges it may publish to (and the last one, checked without a map
// lookup): a publish to an exchange the user may not write to is still refused with 403 after
// publishes to one it may, and the permitted exchange keeps working on a new channel.
func TestPublishWritePermissionAfterCachedExchange(t *testing.T) {
	url, s := testServer(t)
	if err := s.users.AddUser("w", "w", nil, false); err != nil {
		t.Fatal(err)
	}
	if err := s.users.SetPermission("w", "/", auth.Permission{Configure: ".*", Write: "^amq\\.direct$", Read: ".*"}); err != nil {
		t.Fatal(err)
	}
	url = strings.Replace(url, "guest:guest@", "w:w@", 1)
	conn, ch := dial(t, url)
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	for range 3 {
		if err := ch.PublishWithContext(ctx(t), "amq.direct", "k", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.PublishWithContext(ctx(t), "amq.fanout", "k", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != amqp.AccessRefused {
			t.Fatalf("channel closed with %v, want 403 ACCESS_REFUSED", e)
		}
	case <-ctx(t).Done():
		t.Fatal("no channel.close after publishing to an exchange without write permission")
	}
	ch2, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch2.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch2.PublishWithDeferredConfirmWithContext(ctx(t), "amq.direct", "k", false, false, amqp.Publishing{Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(ctx(t)); !ok || err != nil {
		if err == nil {
			err = errors.New("nacked")
		}
		t.Fatalf("publish to the permitted exchange on a new channel: %v", err)
	}
}
