package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// BenchmarkMQTTPersistentDelivery measures QoS 1 and QoS 2 delivery to a persistent session
// (MQTT 3.1.1, clean session false) on a real parley process: one publisher (paho.golang, clean
// session, the same QoS, 1 KiB bodies, 16 publishes in flight), one raw subscriber that
// acknowledges every PUBLISH (QoS 2: PUBREC, then PUBCOMP for each PUBREL). One op is one
// message published and delivered. Deliveries are written in batches, each with its packet
// identifiers' record (packetids.go), waited for when the batch has a QoS 2 message. Not part
// of make test; run with -bench (numbers on a shared machine are noisy).
func BenchmarkMQTTPersistentDelivery(b *testing.B) {
	for _, qos := range []byte{1, 2} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			_, addr := StartParleyMQTT(b)
			id := fmt.Sprintf("bench-persistent-%d", qos)
			r, _ := connectRaw(b, addr, 4, id, false, nil)
			r.send(b, mqttPacket(0x82, append(append([]byte{0, 1}, mqttString("benchp/t")...), qos)))
			r.expect(b, 0x90)
			done := make(chan error, 1)
			go func() {
				for n := 0; n < b.N; {
					_ = r.c.SetDeadline(time.Now().Add(mqttTimeout))
					typ, body, err := r.readPacket()
					if err != nil {
						done <- err
						return
					}
					switch typ & 0xF0 {
					case 0x30:
						tl := int(binary.BigEndian.Uint16(body))
						pid := binary.BigEndian.Uint16(body[2+tl:])
						if qos == 1 {
							_, err = r.c.Write(ack(0x40, pid))
							n++
						} else {
							_, err = r.c.Write(ack(0x50, pid))
						}
					case 0x60: // PUBREL
						_, err = r.c.Write(ack(0x70, binary.BigEndian.Uint16(body)))
						n++
					}
					if err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			p := mqtt5(b, addr, id+"-pub", true, 0)
			body := make([]byte, 1024)
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			// 16 publishes in flight at a time (paho.golang takes concurrent calls).
			const window = 16
			var wg sync.WaitGroup
			errs := make(chan error, window)
			for w := range window {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < b.N; i += window {
						ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
						_, err := p.Publish(ctx, &paho.Publish{Topic: "benchp/t", QoS: qos, Payload: body})
						cancel()
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
