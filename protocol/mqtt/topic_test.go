package mqtt

import "testing"

func TestTopicMapping(t *testing.T) {
	for _, c := range []struct{ topic, key string }{
		{"a/b/c", "a.b.c"},
		{"a.b/c", "a/b.c"},
		{"/lead", ".lead"},
		{"trail/", "trail."},
		{"plain", "plain"},
	} {
		if got := TopicToRoutingKey(c.topic); got != c.key {
			t.Errorf("TopicToRoutingKey(%q) = %q, want %q", c.topic, got, c.key)
		}
		if got := RoutingKeyToTopic(c.key); got != c.topic {
			t.Errorf("RoutingKeyToTopic(%q) = %q, want %q", c.key, got, c.topic)
		}
	}
	for _, c := range []struct{ filter, key string }{
		{"a/+/c", "a.*.c"},
		{"a/#", "a.#"},
		{"#", "#"},
		{"+", "*"},
		{"a.b/+", "a/b.*"},
	} {
		if got := FilterToBindingKey(c.filter); got != c.key {
			t.Errorf("FilterToBindingKey(%q) = %q, want %q", c.filter, got, c.key)
		}
	}
}

func TestMatchFilter(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b/c", "a/b/c", true},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/#", "a", true}, // [MQTT-4.7.1-2]
		{"a/#", "a/b/c", true},
		{"a/+", "a/", true},
		{"a/+", "a", false},
		{"+/+", "/x", true},
		{"#", "$SYS/x", false}, // [MQTT-4.7.2-1]
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
	} {
		if got := matchFilter(c.filter, c.topic); got != c.want {
			t.Errorf("matchFilter(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

func TestSplitShared(t *testing.T) {
	for _, c := range []struct {
		in, group, filter string
		ok                bool
	}{
		{"$share/g/a/b", "g", "a/b", true},
		{"$share/g/#", "g", "#", true},
		{"$share//a", "", "", false},
		{"$share/g/", "", "", false},
		{"a/b", "", "", false},
	} {
		g, f, ok := splitShared(c.in)
		if g != c.group || f != c.filter || ok != c.ok {
			t.Errorf("splitShared(%q) = %q %q %v", c.in, g, f, ok)
		}
	}
}
