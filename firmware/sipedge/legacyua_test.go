package sipedge

import (
	"strings"
	"testing"
)

// TestChallengeAlgorithmsByUserAgent: baresip 1.x (libre 1.x) fails any
// 401 that also carries a SHA-256 challenge, so it is challenged with MD5
// alone and registers with it; every other UAC gets SHA-256 first.
func TestChallengeAlgorithmsByUserAgent(t *testing.T) {
	s := startServer(t, nil)
	for _, tc := range []struct {
		ua   string
		want []string // algorithms in challenge order
	}{
		{"baresip v1.0.0 (x86_64/linux)", []string{AlgMD5}},
		{"baresip v0.6.1 (arm/linux)", []string{AlgMD5}},
		{"baresip v3.10.0 (x86_64/linux)", []string{AlgSHA256, AlgMD5}}, // not matched: later majors
		{"Yealink SIP-T46S 66.86.0.15", []string{AlgSHA256, AlgMD5}},
		{"xbaresip v1.0.0", []string{AlgSHA256, AlgMD5}},
		{"testphone/1.0", []string{AlgSHA256, AlgMD5}},
	} {
		t.Run(tc.ua, func(t *testing.T) {
			p := newPhone(t, s.udp, "127.0.0.1", "101")
			ua := tc.ua
			msg, _ := p.register(regOpts{userAgent: ua})
			p.send(msg)
			_, r := p.mustRecv()
			if r.StatusCode != 401 {
				t.Fatalf("got %d, want 401", r.StatusCode)
			}
			var got []string
			for _, h := range r.GetHeaders("WWW-Authenticate") {
				v := h.Value()
				i := strings.Index(v, "algorithm=")
				if i < 0 {
					t.Fatalf("challenge without algorithm: %s", v)
				}
				got = append(got, strings.TrimSuffix(strings.Fields(v[i+len("algorithm="):])[0], ","))
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("challenges %v, want %v", got, tc.want)
			}
			// The first challenge offered is the one that works.
			msg, _ = p.register(regOpts{userAgent: ua, auth: authHeader(got[0], p.user, testPassword, "edgepbx",
				challengeOf(t, r, got[0]), "sip:"+p.srv.IP.String(), "00000001", randHex(4))})
			p.send(msg)
			if _, r = p.mustRecv(); r.StatusCode != 200 {
				t.Fatalf("%s digest: %d", got[0], r.StatusCode)
			}
		})
	}
}
