package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/go-stomp/stomp/v3"
	sframe "github.com/go-stomp/stomp/v3/frame"
)

// wsSTOMP connects go-stomp over a WebSocket to url offering subprotocols; the STOMP session
// is disconnected at t.Cleanup.
func wsSTOMP(t *testing.T, url string, header http.Header, protos ...string) (*stomp.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: protos, HTTPHeader: header})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageText)
	c, err := stomp.Connect(nc, stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"), stomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		nc.Close()
		return nil, err
	}
	t.Cleanup(func() { _ = c.MustDisconnect() })
	return c, nil
}

// TestWebSocketGateway: Web-STOMP on its own port (with or without a subprotocol, as RabbitMQ's
// Web-STOMP accepts) and on the shared --ws gateway (by subprotocol) reach the same core as
// plain STOMP; MQTT on the shared gateway answers CONNECT; a page from a foreign Origin is refused with 403, and a client offering only
// subprotocols nobody serves is closed.
func TestWebSocketGateway(t *testing.T) {
	t.Parallel()
	wsStomp, wsAll := freeAddr(t), freeAddr(t)
	s, addr := startSTOMP(t, "--ws-stomp", wsStomp, "--ws", wsAll)
	s.SkipIfExternal(t, "configures the WebSocket listeners")
	waitListening(t, wsStomp)
	waitListening(t, wsAll)
	plain := stompDial(t, addr)
	dest := "/queue/" + Name(t, "q")
	sub, err := plain.Subscribe(dest, stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url string
		protos    []string
	}{
		{"web-stomp v12.stomp", "ws://" + wsStomp + "/ws", []string{"v12.stomp"}},
		{"web-stomp v10.stomp", "ws://" + wsStomp + "/ws", []string{"v10.stomp"}},
		{"web-stomp without subprotocol", "ws://" + wsStomp + "/ws", nil},
		{"gateway v11.stomp", "ws://" + wsAll + "/ws", []string{"mqtt-not-offered-by-us", "v11.stomp"}},
	} {
		c, err := wsSTOMP(t, tc.url, nil, tc.protos...)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := c.Send(dest, "text/plain", []byte(tc.name), stomp.SendOpt.Receipt); err != nil {
			t.Fatalf("%s: send: %v", tc.name, err)
		}
		if m := stompRecv(t, sub); string(m.Body) != tc.name {
			t.Fatalf("%s: plain STOMP subscriber got %q", tc.name, m.Body)
		}
	}
	// A message to a WebSocket subscriber arrives as one frame per WebSocket message, which
	// go-stomp over NetConn would not notice; read raw messages to check.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+wsStomp+"/ws", &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if ws.Subprotocol() != "v12.stomp" {
		t.Fatalf("negotiated %q", ws.Subprotocol())
	}
	write := func(s string) {
		if err := ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	write("CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
	own := "/queue/" + Name(t, "ws")
	write("SUBSCRIBE\nid:0\ndestination:" + own + "\nreceipt:r\n\n\x00")
	write("SEND\ndestination:" + own + "\n\none\x00")
	// stomp.js sends a frame with a binary body as a binary message: accepted too.
	if err := ws.Write(ctx, websocket.MessageBinary, []byte("SEND\ndestination:"+own+"\ncontent-length:3\n\nt\x00o\x00")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 4 {
		typ, msg, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, got)
		}
		if typ != websocket.MessageText {
			t.Fatalf("%v message, want text", typ)
		}
		// Exactly one frame per message.
		fr := sframe.NewReader(bytes.NewReader(msg))
		f, err := fr.Read()
		if err != nil || f == nil {
			t.Fatalf("message %q: %v", msg, err)
		}
		if rest, err := fr.Read(); err != io.EOF {
			t.Fatalf("more than one frame in a message: %q (%v, %v)", msg, rest, err)
		}
		got = append(got, f.Command+":"+string(f.Body))
	}
	if strings.Join(got, ",") != "CONNECTED:,RECEIPT:,MESSAGE:one,MESSAGE:t\x00o" {
		t.Fatalf("frames %q", got)
	}

	// Another site's page: the browser sends its Origin, which is not ours.
	h := http.Header{"Origin": []string{"http://evil.example"}}
	if _, err := wsSTOMP(t, "ws://"+wsStomp+"/ws", h, "v12.stomp"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("foreign Origin: got %v, want a 403 refusal", err)
	}
	// The same host's page is fine.
	h = http.Header{"Origin": []string{"http://" + wsStomp}}
	if _, err := wsSTOMP(t, "ws://"+wsStomp+"/ws", h, "v12.stomp"); err != nil {
		t.Fatalf("same-origin page refused: %v", err)
	}
	// MQTT on the shared gateway: subprotocol mqtt, binary messages; CONNECT gets CONNACK 0.
	mq, _, err := websocket.Dial(ctx, "ws://"+wsAll+"/ws", &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
	if err != nil {
		t.Fatalf("mqtt over the gateway: %v", err)
	}
	defer mq.CloseNow()
	if mq.Subprotocol() != "mqtt" {
		t.Fatalf("negotiated %q", mq.Subprotocol())
	}
	connect := []byte{0x10, 0, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2, 0, 60, 0, 2, 'w', 's', 0, 5, 'g', 'u', 'e', 's', 't', 0, 5, 'g', 'u', 'e', 's', 't'}
	connect[1] = byte(len(connect) - 2)
	if err := mq.Write(ctx, websocket.MessageBinary, connect); err != nil {
		t.Fatal(err)
	}
	typ, ack, err := mq.Read(ctx)
	if err != nil || typ != websocket.MessageBinary || len(ack) != 4 || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK over the gateway: %v %v %x", err, typ, ack)
	}

	// The shared gateway has no default protocol: no subprotocol we serve, no session.
	if _, err := wsSTOMP(t, "ws://"+wsAll+"/ws", nil, "nonsense"); err == nil {
		t.Fatalf("gateway served a client that offered no known subprotocol")
	}
}

// TestSTOMPOverTLS: with a certificate configured, the stomps listener serves STOMP over TLS
// and, with ws_tls, Web-STOMP serves wss://.
func TestSTOMPOverTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSignedCert(t)
	stomps, wss := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, "ws_tls: true\ntls:\n  cert_file: "+certFile+"\n  key_file: "+keyFile+"\n")
	s, _ := startSTOMP(t, "--config", cfg, "--stomps", stomps, "--ws-stomp", wss)
	s.SkipIfExternal(t, "configures TLS listeners")
	waitListening(t, stomps)
	waitListening(t, wss)
	tc := &tls.Config{RootCAs: pool}
	nc, err := tls.Dial("tcp", stomps, tc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := stomp.Connect(nc, stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"), stomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatalf("STOMP over TLS: %v", err)
	}
	defer c.MustDisconnect()
	dest := "/queue/" + Name(t, "q")
	sub, err := c.Subscribe(dest, stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	ws, _, err := websocket.Dial(ctx, "wss://"+wss+"/ws", &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}, HTTPClient: client})
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	wc, err := stomp.Connect(websocket.NetConn(context.Background(), ws, websocket.MessageText),
		stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"), stomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatalf("STOMP over wss: %v", err)
	}
	defer wc.MustDisconnect()
	if err := wc.Send(dest, "text/plain", []byte("over wss"), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if m := stompRecv(t, sub); string(m.Body) != "over wss" {
		t.Fatalf("got %q", m.Body)
	}
	// Plain ws:// on the TLS port is refused (no session).
	if _, err := wsSTOMP(t, "ws://"+wss+"/ws", nil, "v12.stomp"); err == nil {
		t.Fatalf("plain ws:// accepted on the wss listener")
	}
}
