package mqtt

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The writer's PUBLISH encoding is byte for byte mochi's, in every protocol version, QoS and
// flag, with and without MQTT 5 properties, across the remaining-length size boundaries.
func TestEncodePublishMatchesMochi(t *testing.T) {
	props := []packets.Properties{
		{},
		{MessageExpiryInterval: 30, ContentType: "text/plain", ResponseTopic: "re/ply",
			CorrelationData: []byte("id-1"), PayloadFormat: 1, PayloadFormatFlag: true,
			SubscriptionIdentifier: []int{3, 200}, TopicAlias: 7, TopicAliasFlag: true,
			User: []packets.UserProperty{{Key: "k", Val: "v"}, {Key: "empty", Val: ""}}},
	}
	var cases int
	for _, version := range []byte{3, 4, 5} {
		for _, qos := range []byte{0, 1, 2} {
			for _, flags := range []int{0, 1, 2, 3} {
				for _, size := range []int{0, 1, 100, 127 - 9, 16383, 16384, 70000} {
					for pi, pr := range props {
						if version < 5 && pi > 0 {
							continue
						}
						for _, topic := range []string{"a/b", "", "t/" + string(bytes.Repeat([]byte("x"), 300))} {
							pk := packets.Packet{
								FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: qos, Dup: flags&1 != 0, Retain: flags&2 != 0},
								ProtocolVersion: version,
								TopicName:       topic,
								Payload:         bytes.Repeat([]byte{0xA5}, size),
								Properties:      pr,
								Mods:            packets.Mods{AllowResponseInfo: true},
							}
							if qos > 0 {
								pk.PacketID = 0x1234
							}
							var want bytes.Buffer
							if err := pk.PublishEncode(&want); err != nil {
								t.Fatal(err)
							}
							w := &outWriter{buf: new(bytes.Buffer)}
							w.buf.WriteString("before")
							if err := w.encodePublish(&pk); err != nil {
								t.Fatal(err)
							}
							got := w.buf.Bytes()
							name := fmt.Sprintf("v%d qos%d flags%d size%d props%d topic%d", version, qos, flags, size, pi, len(topic))
							if string(got[:6]) != "before" || !bytes.Equal(got[6:], want.Bytes()) {
								t.Fatalf("%s: encoding differs from mochi's (%d bytes against %d)", name, len(got)-6, want.Len())
							}
							cases++
						}
					}
				}
			}
		}
	}
	if cases < 500 {
		t.Fatalf("only %d cases ran", cases)
	}
}

func TestEncodePublishNeedsPacketID(t *testing.T) {
	w := &outWriter{buf: new(bytes.Buffer)}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 4, TopicName: "a"}
	if err := w.encodePublish(&pk); !errors.Is(err, packets.ErrProtocolViolationNoPacketID) {
		t.Fatalf("QoS 1 without a packet identifier: %v", err)
	}
}
