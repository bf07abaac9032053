package provision

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkKnownPhoneFetch is one enrolled phone's authenticated fetch
// (digest, store lookup, unseal, render) through the HTTPS handler.
func BenchmarkKnownPhoneFetch(b *testing.B) {
	t := &testing.T{}
	h := newHarness(t)
	h.t = t
	h.svc.deps.Limits.Rate = 1e9
	h.svc.deps.Limits.Burst = 1 << 30
	p := phones()[0]
	h.add(p.mac, p.vendor, true, "101")
	h.do(true, "GET", "/"+p.device, p.ua, "10.1.1.20", nil)
	sec := h.secrets(p.mac)
	auth := h.withDigest(p.mac, sec.Credential)
	handler := h.svc.HTTPSHandler()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r := httptest.NewRequest("GET", "/"+p.device, nil)
		r.RemoteAddr = "10.1.1.20:4000"
		r.Header.Set("User-Agent", p.ua)
		auth(r)
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}
