package meta

import (
	"bytes"
	"sort"
)

// MQTT retained messages (DESIGN.md §3: they live in the metadata state machine, so they are
// durable with it and replicated through group 0). The state keeps each message encoded (the
// core's binary message encoding, broker/message): it never looks inside, and its record
// (records.go) holds the bytes as they are.

// SetRetained stores msg as the retained message of topic in vhost; an empty msg clears it
// [MQTT-3.3.1-10]. It reports whether anything changed.
func (s *State) SetRetained(vhost, topic string, msg []byte) bool {
	if len(msg) == 0 {
		m := s.retained[vhost]
		if _, ok := m[topic]; !ok {
			return false
		}
		delete(m, topic)
		s.touch(recordRef{kind: recRetained, vhost: vhost, name: topic})
		return true
	}
	if s.retained == nil {
		s.retained = map[string]map[string][]byte{}
	}
	m := s.retained[vhost]
	if m == nil {
		m = map[string][]byte{}
		s.retained[vhost] = m
	}
	if old, ok := m[topic]; ok && bytes.Equal(old, msg) {
		return false
	}
	m[topic] = bytes.Clone(msg)
	s.touch(recordRef{kind: recRetained, vhost: vhost, name: topic})
	return true
}

// RetainedMessages calls fn for each retained message of vhost, in topic order, until fn
// returns false. fn must not keep msg.
func (s *State) RetainedMessages(vhost string, fn func(topic string, msg []byte) bool) {
	m := s.retained[vhost]
	topics := make([]string, 0, len(m))
	for t := range m {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		if !fn(t, m[t]) {
			return
		}
	}
}
