package wire

import (
	"bytes"
	"testing"

	"github.com/go-stomp/stomp/v3/frame"
)

// BenchmarkReadFrame reads 1 KiB SEND frames with content-length, the common publish.
func BenchmarkReadFrame(b *testing.B) {
	f := frame.New(frame.SEND, frame.Destination, "/queue/bench", frame.ContentType, "application/octet-stream", "persistent", "true")
	f.Body = make([]byte, 1024)
	one := AppendFrame(nil, f, V12)
	data := bytes.Repeat(one, 1000)
	b.SetBytes(int64(len(one)))
	b.ReportAllocs()
	var r *Reader
	for i := 0; i < b.N; i++ {
		if i%1000 == 0 {
			r = NewReader(bytes.NewReader(data), Limits{})
			r.SetVersion(V12)
		}
		if _, err := r.Read(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendMessage encodes a MESSAGE frame as a delivery does.
func BenchmarkAppendMessage(b *testing.B) {
	body := make([]byte, 1024)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = AppendCommand(buf[:0], frame.MESSAGE)
		buf = AppendHeader(buf, frame.Subscription, "sub-0", V12)
		buf = AppendHeader(buf, frame.Destination, "/queue/bench", V12)
		buf = AppendHeader(buf, frame.MessageId, "T_sub-0@@session-0123456789ab@@12345", V12)
		buf = AppendHeader(buf, frame.ContentLength, "1024", V12)
		buf = AppendBody(buf, body)
	}
	b.SetBytes(int64(len(buf)))
}
