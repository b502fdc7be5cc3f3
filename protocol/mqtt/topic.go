package mqtt

import "strings"

// Topic names and filters map onto the topic exchange as RabbitMQ's MQTT plugin maps them:
// the level separator '/' becomes the word separator '.', and a '.' inside a level becomes '/'
// so the mapping is reversible. '+' (one level) becomes '*' (one word); '#' stays.

// swapSeparators exchanges '/' and '.'.
func swapSeparators(s string) string {
	if !strings.ContainsAny(s, "./") {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		switch c {
		case '/':
			b[i] = '.'
		case '.':
			b[i] = '/'
		}
	}
	return string(b)
}

// TopicToRoutingKey maps an MQTT topic name to a routing key.
func TopicToRoutingKey(topic string) string { return swapSeparators(topic) }

// RoutingKeyToTopic maps a routing key to an MQTT topic name.
func RoutingKeyToTopic(key string) string { return swapSeparators(key) }

// FilterToBindingKey maps an MQTT topic filter to a binding key.
func FilterToBindingKey(filter string) string {
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if l == "+" {
			levels[i] = "*"
		} else {
			levels[i] = strings.ReplaceAll(l, ".", "/")
		}
	}
	return strings.Join(levels, ".")
}

// sharePrefix starts a shared subscription filter: $share/<group>/<filter>.
const sharePrefix = "$share/"

// splitShared returns the group and the filter of a shared subscription.
func splitShared(filter string) (group, f string, ok bool) {
	if !strings.HasPrefix(filter, sharePrefix) {
		return "", "", false
	}
	rest := filter[len(sharePrefix):]
	i := strings.IndexByte(rest, '/')
	if i <= 0 || i == len(rest)-1 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// matchFilter reports whether topic matches filter. Filters starting with a wildcard do not
// match topics starting with '$' [MQTT-4.7.2-1].
func matchFilter(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore && !tmore {
			return true
		}
		if !fmore {
			return false
		}
		if !tmore {
			// "a/#" matches "a" [MQTT-4.7.1-2].
			return frest == "#"
		}
		filter, topic = frest, trest
	}
}
