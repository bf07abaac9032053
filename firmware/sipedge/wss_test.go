package sipedge

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// TestWSS registers over WebSocket-over-TLS (RFC 7118) while another client
// holds a connection open without ever handshaking: the stalled client must
// not block the listener.
func TestWSS(t *testing.T) {
	cfg := testConfig()
	cfg.WSS = "127.0.0.1:0"
	s := startServerTLS(t, cfg, selfSigned(t))
	addr := s.Addr("wss").String()

	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := ws.Dialer{TLSConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, Protocols: []string{"sip"}}
	c, _, _, err := d.Dial(ctx, "wss://"+addr)
	if err != nil {
		t.Fatalf("wss dial (blocked by the stalled client?): %v", err)
	}
	defer c.Close()
	msg := "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK" + randHex(6) +
		"\r\nMax-Forwards: 70\r\nFrom: <sip:101@127.0.0.1>;tag=1\r\nTo: <sip:101@127.0.0.1>\r\nCall-ID: " + randHex(6) +
		"\r\nCSeq: 1 REGISTER\r\nContact: <sip:101@df7jal23ls0d.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n"
	if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := wsutil.ReadServerText(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(res), "SIP/2.0 401 Unauthorized\r\n") {
		t.Fatalf("over WSS: %q", res)
	}
}
