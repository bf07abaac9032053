package main

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkHealthz measures GET /healthz over HTTPS on loopback, client and
// server in this process (they share the CPU): reused HTTP/2 and HTTP/1.1
// connections, and a new TLS connection per request.
func BenchmarkHealthz(b *testing.B) {
	dir := b.TempDir()
	d, err := newDaemon(config{devDir: dir, dataDir: dir, httpsAddr: "127.0.0.1:0", sipAddr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer d.close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.serveHTTPS(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	url := "https://" + d.httpsLn.Addr().String() + "/healthz"
	fp := d.certs.Fingerprint()

	cases := []struct {
		name      string
		h2        bool
		keepAlive bool
	}{{"h2", true, true}, {"http1.1", false, true}, {"new-tls-conn", false, false}}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			c := pinnedClient(fp, 0, 0)
			tr := c.Transport.(*http.Transport)
			tr.ForceAttemptHTTP2 = tc.h2
			if !tc.h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			tr.DisableKeepAlives = !tc.keepAlive
			tr.MaxIdleConnsPerHost = 64
			defer c.CloseIdleConnections()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK || (resp.ProtoMajor == 2) != tc.h2 {
						b.Errorf("%s %s", resp.Proto, resp.Status)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// BenchmarkDevStart starts the real binary in dev mode on a fresh directory
// (first start: identity, store, certificate), waits until /healthz answers,
// reads its resident memory and stops it.
func BenchmarkDevStart(b *testing.B) {
	var rssTotal float64
	for i := range b.N {
		dir := filepath.Join(b.TempDir(), strconv.Itoa(i))
		p := startProc(b, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
		base := p.waitLine(b, adminRE)[1]
		fp := p.waitLine(b, fpRE)[1]
		c := pinnedClient(fp, 0, 0)
		resp, err := c.Get(base + "/healthz")
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		c.CloseIdleConnections()
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(rssKB(p.cmd.Process.Pid), " kB"), 64)
		rssTotal += kb
		if code := p.stop(b); code != 0 {
			b.Fatalf("exit %d", code)
		}
	}
	b.ReportMetric(rssTotal/float64(b.N), "RSS-kB")
}
