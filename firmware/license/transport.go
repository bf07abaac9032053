package license

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// httpClient posts one small request a day over HTTPS, optionally through an
// HTTP CONNECT proxy. The box only ever dials out.
type httpClient struct {
	c *http.Client
}

func newHTTPClient(cfg Config) *httpClient {
	dial := cfg.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 15 * time.Second}).DialContext
	}
	tr := &http.Transport{
		DialContext: dial,
		TLSClientConfig: &tls.Config{
			RootCAs:    cfg.RootCAs,
			MinVersion: tls.VersionTLS12,
			// Classical key shares only: the hybrid post-quantum share adds
			// about 2.3 KB to every handshake and would break the 2 KB daily
			// budget. What travels is a serial and coarse counts, and the
			// answer's integrity rests on the Ed25519 signature, not on TLS.
			CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
			// Resume yesterday's session: a resumed handshake carries no
			// certificate chain, the bulk of a check-in's bytes.
			ClientSessionCache: tls.NewLRUClientSessionCache(4),
		},
		TLSHandshakeTimeout:    15 * time.Second,
		ResponseHeaderTimeout:  20 * time.Second,
		DisableKeepAlives:      true, // one request a day: no idle connections
		DisableCompression:     true, // the response size limit applies to real bytes
		MaxResponseHeaderBytes: 8 << 10,
	}
	if cfg.Proxy != nil {
		// net/http sends CONNECT with Proxy-Authorization from the URL's user info.
		tr.Proxy = http.ProxyURL(cfg.Proxy)
		tr.OnProxyConnectResponse = func(_ context.Context, _ *url.URL, _ *http.Request, resp *http.Response) error {
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("license: proxy CONNECT refused: %s", resp.Status)
			}
			return nil
		}
	}
	return &httpClient{c: &http.Client{
		Transport: tr,
		Timeout:   cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is a failure, not a new destination
		},
	}}
}

func (h *httpClient) post(ctx context.Context, server string, req *Request) ([]byte, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("license: encode request: %w", err)
	}
	if len(body) > MaxRequestBytes {
		return nil, fmt.Errorf("license: request is %d bytes, limit %d", len(body), MaxRequestBytes)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(server, "/")+CheckinPath, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("license: build request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("User-Agent", "edgepbx-license/1")
	resp, err := h.c.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("license: check-in: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("license: check-in: server answered %s", resp.Status)
	}
	if resp.ContentLength > MaxResponseBytes {
		return nil, ErrOversize
	}
	return ReadEnvelope(resp.Body)
}

// CheckinPath is the server endpoint the box posts to.
const CheckinPath = "/v1/checkin"
