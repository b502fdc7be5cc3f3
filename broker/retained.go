package broker

import (
	"github.com/parleymq/parley/broker/message"
	"github.com/parleymq/parley/broker/meta"
)

// Retained messages for MQTT. They are metadata (broker/meta): setting one writes the durable
// metadata through group 0 and waits for it, so a retained publish is acknowledged only once it
// would survive a crash. Each set writes one entry with that message's record (durable.go,
// broker/meta/records.go), whatever else the metadata holds; the sets are serialised with every
// other metadata change (b.mu) and each waits for its fsync, so this is meant for the rate at
// which devices update retained state, not for a firehose.

// SetRetained makes m the retained message of topic; nil clears it.
func (v *VHost) SetRetained(topic string, m *message.Message) error {
	var enc []byte
	if m != nil {
		var err error
		if enc, err = message.AppendBinary(nil, m); err != nil {
			return meta.Errorf(meta.InternalError, "cannot encode retained message: %v", err)
		}
	}
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	if !v.b.meta.SetRetained(v.name, topic, enc) {
		return nil
	}
	return v.b.persistMetaLocked()
}

// RetainedMessages returns the retained messages whose topic match reports true.
func (v *VHost) RetainedMessages(match func(topic string) bool) map[string]*message.Message {
	out := map[string]*message.Message{}
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	v.b.meta.RetainedMessages(v.name, func(topic string, enc []byte) bool {
		if match(topic) {
			if m, _, err := message.DecodeBinary(append([]byte(nil), enc...)); err == nil {
				out[topic] = m
			}
		}
		return true
	})
	return out
}
