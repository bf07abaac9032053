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
			MinVersion: tls.VersionTLS13,
			// Classical key shares only: the hybrid post-quantum share adds
			// about 2.3 KB to every handshake and would break the 2 KB daily
			// budget. What travels is a serial and coarse counts, and the
			// answer's integrity rests on the Ed25519 signature, not on TLS.
			CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
			// Resume yesterday's session, also across restarts (kept
			// sealed in the store): a resumed handshake carries no
			// certificate chain, the bulk of a check-in's bytes.
			ClientSessionCache: newSessionCache(cfg.DB, cfg.Logger),
		},
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 20 * time.Second,
		// One request a day, and no idle connection after it: post closes
		// it itself. Keep-alive stays on only so that neither side sends
		// "Connection: close" (38 bytes of the daily budget).
		MaxIdleConnsPerHost:    1,
		IdleConnTimeout:        5 * time.Second,
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
	// No Content-Type, and an empty User-Agent, which net/http leaves out:
	// the server knows what it is sent (the body carries the protocol
	// version), and every byte counts against the daily budget.
	hreq.Header["User-Agent"] = []string{""}
	defer h.c.CloseIdleConnections()
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
