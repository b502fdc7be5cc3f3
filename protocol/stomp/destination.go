package stomp

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"strings"
)

// destKind is a destination type of RabbitMQ's STOMP plugin
// (https://www.rabbitmq.com/docs/stomp#d).
type destKind uint8

const (
	destQueue      destKind = iota // /queue/q: a queue the plugin declares, via the default exchange
	destTopic                      // /topic/key: amq.topic with that routing key
	destExchange                   // /exchange/e[/key]: any exchange
	destAmqQueue                   // /amq/queue/q: an existing queue, never declared
	destTempQueue                  // /temp-queue/x: a private reply queue of this connection
	destReplyQueue                 // /reply-queue/q: a temp queue named in a reply-to header
)

func (k destKind) String() string {
	switch k {
	case destQueue:
		return "queue"
	case destTopic:
		return "topic"
	case destExchange:
		return "exchange"
	case destAmqQueue:
		return "amqqueue"
	case destTempQueue:
		return "temp_queue"
	}
	return "reply_queue"
}

type destination struct {
	kind destKind
	name string // queue, topic key, exchange, temp-queue id or reply queue
	key  string // /exchange/ only: the routing key (pattern for SUBSCRIBE)
}

// parseDestination follows rabbit_stomp_util:parse_destination: "%2F" in a segment is "/".
func parseDestination(s string) (destination, error) {
	simple := func(kind destKind, rest string) (destination, error) {
		parts := splitContent(rest)
		if len(parts) != 1 || parts[0] == "" {
			return destination{}, errorf("Invalid destination", "'%s' is not a valid %s destination\n", rest, kind)
		}
		return destination{kind: kind, name: parts[0]}, nil
	}
	switch {
	case strings.HasPrefix(s, "/queue"):
		return simple(destQueue, s[len("/queue"):])
	case strings.HasPrefix(s, "/topic"):
		return simple(destTopic, s[len("/topic"):])
	case strings.HasPrefix(s, "/amq/queue"):
		return simple(destAmqQueue, s[len("/amq/queue"):])
	case strings.HasPrefix(s, "/temp-queue"):
		return simple(destTempQueue, s[len("/temp-queue"):])
	case strings.HasPrefix(s, "/reply-queue/"):
		// Reply queue names may hold slashes.
		rest := s[len("/reply-queue/"):]
		if rest == "" {
			return destination{}, errorf("Invalid destination", "'%s' is not a valid reply_queue destination\n", rest)
		}
		return destination{kind: destReplyQueue, name: rest}, nil
	case strings.HasPrefix(s, "/exchange"):
		rest := s[len("/exchange"):]
		parts := splitContent(rest)
		// The default exchange cannot be named this way: it means different things for SEND
		// and SUBSCRIBE.
		if len(parts) == 0 || len(parts) > 2 || parts[0] == "" {
			return destination{}, errorf("Invalid destination", "'%s' is not a valid exchange destination\n", rest)
		}
		d := destination{kind: destExchange, name: parts[0]}
		if len(parts) == 2 {
			d.key = parts[1]
		}
		return d, nil
	}
	return destination{}, errorf("Unknown destination", "'%s' is not a valid destination.\n"+
		"Valid destination types are: /temp-queue, /exchange, /topic, /queue, /amq/queue, /reply-queue/.\n", s)
}

func splitContent(rest string) []string {
	rest = strings.TrimPrefix(rest, "/")
	if rest == "" {
		return nil
	}
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, "%2F", "/")
	}
	return parts
}

// formatDestination is the destination header of a MESSAGE, from where the message was
// published (rabbit_stomp_util:format_destination).
func formatDestination(exchange, key string) string {
	switch {
	case exchange == "":
		return "/queue/" + escapeDest(key)
	case exchange == "amq.topic":
		return "/topic/" + escapeDest(key)
	case key == "":
		return "/exchange/" + escapeDest(exchange)
	}
	return "/exchange/" + escapeDest(exchange) + "/" + escapeDest(key)
}

func escapeDest(s string) string {
	if !strings.ContainsAny(s, "/%") && printableASCII(s) {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '/' || c == '%' || c < 32 || c > 127 {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 32 || s[i] > 127 {
			return false
		}
	}
	return true
}

// durableSubscriptionQueue names the queue of a durable topic subscription after the
// subscription's name, so the same subscriber finds it again after reconnecting.
func durableSubscriptionQueue(name string) string {
	sum := md5.Sum([]byte(name))
	return "stomp-subscription-" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// generatedQueue names a private queue: "stomp-subscription-<random>" for a non-durable topic
// subscription, "stomp.gen-<random>" for a temp queue (RabbitMQ's prefixes).
func generatedQueue(prefix string) string {
	var r [16]byte
	_, _ = rand.Read(r[:])
	return prefix + base64.RawURLEncoding.EncodeToString(r[:])
}
