package provision

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/icholy/digest"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

type countAtomic = atomic.Int64

// realm is the HTTP digest realm of the per-device credential.
const realm = "edgepbx-provisioning"

const (
	maxFetchLog  = 1024
	maxLogBody   = 64 << 10 // one Poly upload
	maxLogTail   = 8 << 10  // kept per phone
	nonceTTL     = 5 * time.Minute
	refusalBody  = "authentication required\n"
	refusalCType = "text/plain; charset=utf-8"
)

// Security event kinds of this package.
const (
	KindProvRefused logs.Kind = "provision.refused"
	KindProvBan     logs.Kind = "provision.ban"
	// KindDHCPRefused: the DHCP server did not start, another answers on the link.
	KindDHCPRefused logs.Kind = "provision.dhcp_refused"
	KindProvScan    logs.Kind = "provision.under_attack"
)

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// HTTPSHandler serves configurations (with secrets, to proof), the CA,
// Poly log uploads and firmware files.
func (s *Service) HTTPSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, true) })
}

// HTTPHandler is the plain-HTTP bootstrap: the CA and, for any file a phone
// asks for, the vendor's bootstrap (HTTPS URL, CA, time, firmware) — the
// same bytes whatever the MAC, never a secret.
func (s *Service) HTTPHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, false) })
}

// source is the peer address, unmapped; no forwarded headers are believed.
func source(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// splitPath returns the optional one-time token and the file name:
// /<file>, /t/<token>/<file> or /fw/<id>.
func splitPath(p string) (token, file string, firmware bool, ok bool) {
	if len(p) > maxPathLen || !strings.HasPrefix(p, "/") {
		return "", "", false, false
	}
	p = p[1:]
	if rest, ok := strings.CutPrefix(p, "t/"); ok {
		tok, f, found := strings.Cut(rest, "/")
		if !found || len(tok) != 26 || strings.Contains(f, "/") || f == "" {
			return "", "", false, false
		}
		return tok, f, false, true
	}
	if rest, ok := strings.CutPrefix(p, "fw/"); ok {
		return "", rest, true, rest != "" && !strings.Contains(rest, "/")
	}
	if p == "" || strings.Contains(p, "/") {
		return "", "", false, false
	}
	return "", p, false, true
}

func (s *Service) serve(w http.ResponseWriter, r *http.Request, secure bool) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	src := source(r)
	ua := r.UserAgent()
	if s.isBanned(src) {
		s.logFetch("", src, r.URL.Path, "banned", "", ua)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	if !s.allow(src) {
		s.logFetch("", src, r.URL.Path, "rate-limited", "", ua)
		http.Error(w, "too many requests", http.StatusTooManyRequests)
		return
	}
	token, file, fw, ok := splitPath(r.URL.Path)
	if ok && fw {
		s.serveFirmware(w, r, file, ua, src)
		return
	}
	var req Request
	var err error
	if ok {
		req, err = Identify(r.Method, file, ua)
	}
	if !ok || err != nil {
		// Template paths, traversal, a MAC that differs from the UA's: a
		// probe. Answered like any refusal and counted like one.
		key := "path:" + r.URL.Path
		if len(key) > 80 {
			key = key[:80]
		}
		s.refuse(w, r, secure, src, key, "not-provisioning", ua)
		return
	}
	switch req.Kind {
	case KindCA:
		s.serveCA(w, src, ua)
		return
	case KindCommon:
		s.serveBootstrap(w, req, src, ua, true)
		return
	}
	if !secure {
		if req.Kind == KindLog {
			s.logFetch(req.MAC, src, file, "refused-plain-http", "", ua)
			http.Error(w, "use HTTPS", http.StatusMethodNotAllowed)
			return
		}
		// A MAC file over plain HTTP: the same bootstrap for every MAC, so
		// nothing tells a known MAC from an unknown one; an unknown MAC is
		// listed as asking, and many MACs from one source are a scan.
		if !s.known(req.MAC) {
			s.noteAsking(req, src.String(), ua)
			if s.noteRefusal(src, req.MAC) {
				s.isBanned(src) // ban recorded; this answer is already the harmless one
			}
		}
		s.serveBootstrap(w, req, src, ua, false)
		return
	}
	d, sec, proof, found := s.authorize(r, req, token)
	if proof == "" {
		if !found {
			s.noteAsking(req, src.String(), ua)
		}
		s.refuse(w, r, secure, src, req.MAC, "no-proof", ua)
		return
	}
	if req.Kind == KindLog {
		s.acceptLog(w, r, req, src, ua)
		return
	}
	body, err := s.renderDevice(d, sec, req)
	if err != nil {
		s.log.Error("render configuration", "mac", d.MAC, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	s.recordSuccess(d, req, src, ua, proof, file)
	w.Header().Set("Content-Type", contentType(d.Vendor))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func contentType(v Vendor) string {
	if v == Yealink {
		return "text/plain; charset=utf-8"
	}
	return "application/xml; charset=utf-8"
}

// refuse is the one answer for unknown MAC, wrong token, wrong or missing
// credential, revoked phone, closed window and probes: same status, same
// headers, same body (only the nonce differs, and it is random for all).
func (s *Service) refuse(w http.ResponseWriter, r *http.Request, secure bool, src netip.Addr, key, why, ua string) {
	mac := key
	if strings.HasPrefix(key, "path:") {
		mac = ""
	}
	s.logFetch(mac, src, r.URL.Path, "refused", why, ua)
	if s.noteRefusal(src, key) {
		s.log.Warn("provisioning source banned", "source", src, "reason", "provisioning-mac-scan")
	}
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxLogBody))
	}
	h := w.Header()
	if secure {
		h.Set("WWW-Authenticate", s.challenge())
	}
	h.Set("Content-Type", refusalCType)
	h.Set("Content-Length", strconv.Itoa(len(refusalBody)))
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte(refusalBody))
}

// challenge is a digest challenge whose nonce is the time and an HMAC of it:
// stateless, so a flood of fetches holds no memory.
func (s *Service) challenge() string {
	ts := strconv.FormatInt(s.now().Unix(), 16)
	c := digest.Challenge{Realm: realm, Nonce: ts + "." + s.nonceMAC(ts), Algorithm: "MD5", QOP: []string{"auth"}}
	return c.String()
}

func (s *Service) nonceMAC(ts string) string {
	h := sha256.New()
	h.Write(s.nonceKey[:])
	h.Write([]byte(ts))
	return hex.EncodeToString(h.Sum(nil))[:32]
}

func (s *Service) nonceOK(n string) bool {
	ts, mac, ok := strings.Cut(n, ".")
	if !ok || len(ts) > 16 || !hmacEqual(mac, s.nonceMAC(ts)) {
		return false
	}
	t, err := strconv.ParseInt(ts, 16, 64)
	if err != nil {
		return false
	}
	age := s.now().Sub(time.Unix(t, 0))
	return age >= -time.Minute && age <= nonceTTL
}

// checkDigest always computes one response hash, with the phone's HA1 or
// a dummy, so a refusal costs the same whatever its reason.
func (s *Service) checkDigest(r *http.Request, mac, ha1 string) bool {
	cred, err := digest.ParseCredentials(r.Header.Get("Authorization"))
	valid := err == nil && cred.Username == mac && cred.Realm == realm && s.nonceOK(cred.Nonce) &&
		(cred.Algorithm == "" || strings.EqualFold(cred.Algorithm, "MD5")) && cred.URI == r.URL.RequestURI() && len(cred.Response) == 32
	if !valid {
		cred = &digest.Credentials{Nonce: "x", Nc: 1, Cnonce: "x", QOP: "auth", URI: r.URL.RequestURI()}
	}
	s.hashes.Add(1)
	ha2 := md5hex(r.Method + ":" + cred.URI)
	var want string
	if cred.QOP == "auth" {
		want = md5hex(ha1 + ":" + cred.Nonce + ":" + fmt.Sprintf("%08x", cred.Nc) + ":" + cred.Cnonce + ":auth:" + ha2)
	} else {
		want = md5hex(ha1 + ":" + cred.Nonce + ":" + ha2)
	}
	return valid && hmacEqual(want, cred.Response)
}

// authorize decides whether req may have its secrets, and by which proof:
// "certificate", "digest", "token" or "window" ("" = refused).
func (s *Service) authorize(r *http.Request, req Request, token string) (Device, deviceSecrets, string, bool) {
	var d Device
	var sec deviceSecrets
	found := false
	err := s.deps.Store.View(func(tx *store.Tx) error {
		ok, err := tx.Get(bucketDevices, req.MAC, &d)
		if err != nil || !ok {
			return err
		}
		sec, found, err = s.getSecrets(tx, req.MAC)
		return err
	})
	if !found {
		_, _ = s.deps.Store.Unseal(s.dummySeal, "provision/dummy")
	}
	if err != nil {
		s.log.Error("provisioning lookup", "mac", req.MAC, "err", err)
		found = false
	}
	ha1 := s.dummyHA1
	if found && sec.Credential != "" {
		ha1 = md5hex(req.MAC + ":" + realm + ":" + sec.Credential)
	} else {
		md5hex(req.MAC + ":" + realm + ":") // same work as the line above
	}
	digestOK := s.checkDigest(r, req.MAC, ha1)
	cv := d.Vendor
	if cv == "" {
		cv = req.Vendor
	}
	certOK := s.checkCert(r, req.MAC, cv)
	if !found || d.State != Approved || (d.Vendor != req.Vendor && req.Vendor != "" && d.Vendor != "") {
		return d, sec, "", found
	}
	if certOK {
		return d, sec, "certificate", true
	}
	if digestOK && sec.Credential != "" {
		return d, sec, "digest", true
	}
	now := s.now()
	inWindow := !d.Enrolled && now.Before(d.WindowUntil) && (s.deps.Licence == nil || s.deps.Licence.AllowProvisioning())
	if token != "" {
		if inWindow && !d.TokenUsed && sec.Token != "" && hmacEqual(token, sec.Token) {
			return d, sec, "token", true
		}
		return d, sec, "", true
	}
	if inWindow && req.Vendor != Linphone && !s.underAttack() {
		return d, sec, "window", true
	}
	return d, sec, "", true
}

// renderDevice builds the phone's configuration with its secrets.
func (s *Service) renderDevice(d Device, sec deviceSecrets, req Request) ([]byte, error) {
	t := s.templates[d.Vendor]
	if t == nil {
		return nil, fmt.Errorf("provision: no template for %s", d.Vendor)
	}
	p := s.params(d.Vendor, req.Model)
	p.MAC, p.ProvUser, p.ProvPass = d.MAC, d.MAC, sec.Credential
	for i, e := range d.Extensions {
		p.Lines = append(p.Lines, Line{Index: i + 1, User: e, Password: sec.SIP[e], Display: e})
	}
	return t.Render(&p, true)
}

func (s *Service) params(v Vendor, model string) Params {
	st := s.settings()
	p := Params{Host: s.deps.Host, SIPPort: s.deps.SIPPort, Transport: st.Transport, ProvURL: s.provURL(), BootURL: s.bootURL(),
		CAURL: s.bootURL() + "ca.pem", NTP: st.NTP, Timezone: st.Timezone, Language: st.Language, Codecs: st.Codecs}
	if s.deps.CAPEM != nil {
		p.CAPEM = string(bytes.TrimSpace(s.deps.CAPEM()))
	}
	if f, ok := s.firmwareFor(v, model); ok {
		p.Firmware = s.provURL() + "fw/" + f.ID
	}
	return p
}

// serveBootstrap answers files without secrets. For a MAC file over plain
// HTTP it is the vendor's bootstrap, not tied to the MAC.
func (s *Service) serveBootstrap(w http.ResponseWriter, req Request, src netip.Addr, ua string, common bool) {
	v := req.Vendor
	t := s.templates[v]
	if t == nil {
		http.NotFound(w, nil)
		return
	}
	var body []byte
	if v == Poly && common {
		// Poly's master file: the configuration file each phone then asks for.
		body = []byte(`<?xml version="1.0" standalone="yes"?>` + "\n" +
			`<APPLICATION APP_FILE_PATH="" CONFIG_FILES="edgepbx-[PHONE_MAC_ADDRESS].cfg"/>` + "\n")
	} else {
		p := s.params(v, req.Model)
		var err error
		body, err = t.Render(&p, false)
		if err != nil {
			s.log.Error("render bootstrap", "vendor", v, "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
	}
	s.logFetch(req.MAC, src, req.File, "bootstrap", "", ua)
	w.Header().Set("Content-Type", contentType(v))
	_, _ = w.Write(body)
}

func (s *Service) serveCA(w http.ResponseWriter, src netip.Addr, ua string) {
	var pemData []byte
	if s.deps.CAPEM != nil {
		pemData = s.deps.CAPEM()
	}
	if len(pemData) == 0 {
		http.NotFound(w, nil)
		return
	}
	s.logFetch("", src, "ca.pem", "ca", "", ua)
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(pemData)
}

func (s *Service) known(mac string) bool {
	found := false
	_ = s.deps.Store.View(func(tx *store.Tx) error {
		var d Device
		ok, err := tx.Get(bucketDevices, mac, &d)
		found = ok && err == nil
		return nil
	})
	return found
}

// recordSuccess marks the enrolment used up (window or token) in one
// transaction that re-checks it, so two racing fetches cannot both enrol,
// and keeps the last fetch.
func (s *Service) recordSuccess(d Device, req Request, src netip.Addr, ua, proof, file string) {
	f := Fetch{Time: s.now(), Source: src.String(), File: file, Result: "config", Proof: proof, UserAgent: truncate(ua, 128)}
	s.logFetch(d.MAC, src, file, "config", proof, ua)
	s.mu.Lock()
	s.lastFetch(d.MAC, f)
	s.mu.Unlock()
	if proof != "token" && proof != "window" && d.Firmware == req.Firmware {
		return
	}
	err := s.deps.Store.Update(func(tx *store.Tx) error {
		var cur Device
		if ok, err := tx.Get(bucketDevices, d.MAC, &cur); err != nil || !ok {
			return err
		}
		if proof == "token" || proof == "window" {
			cur.Enrolled = true
			cur.TokenUsed = cur.TokenUsed || proof == "token"
			cur.LastFetch = &f
		}
		if req.Firmware != "" {
			cur.Firmware = req.Firmware
		}
		if req.Model != "" && cur.Model == "" {
			cur.Model = req.Model
		}
		if err := tx.Put(bucketDevices, d.MAC, cur); err != nil {
			return err
		}
		if proof == "token" || proof == "window" {
			return s.auditTx(tx, "phone:"+d.MAC, src.String(), "phone.enrolled", d.MAC, nil, map[string]string{"proof": proof, "file": file})
		}
		return nil
	})
	if err != nil {
		s.log.Error("record enrolment", "mac", d.MAC, "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "?")
}

// lastFetch keeps the newest successful fetch per phone in memory (a disk
// write per fetch would cap the rate at the disk's); s.mu held.
func (s *Service) lastFetch(mac string, f Fetch) {
	if s.last == nil {
		s.last = map[string]Fetch{}
	}
	if len(s.last) >= maxDevices {
		clear(s.last)
	}
	s.last[mac] = f
}

// logFetch keeps every fetch (MAC, source, result) in a bounded ring and
// in the service log.
func (s *Service) logFetch(mac string, src netip.Addr, file, result, detail, ua string) {
	f := Fetch{Time: s.now(), Source: src.String(), File: truncate(file, 96), Result: result, Proof: detail, UserAgent: truncate(ua, 128)}
	// Deliveries at info; refusals at debug (a scan would flood PID 1's
	// ring buffer): they are in the fetch ring, and bans in the security log.
	lvl := slog.LevelDebug
	if result == "config" || result == "log" || result == "firmware" {
		lvl = slog.LevelInfo
	}
	s.log.Log(context.Background(), lvl, "provisioning fetch", "mac", mac, "source", f.Source, "file", f.File, "result", result, "detail", detail)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.fetches) < maxFetchLog {
		s.fetches = append(s.fetches, f)
		return
	}
	s.fetches[s.fetchNxt] = f
	s.fetchNxt = (s.fetchNxt + 1) % maxFetchLog
}

// Fetches returns the fetch log, oldest first.
func (s *Service) Fetches() []Fetch {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]Fetch(nil), s.fetches[s.fetchNxt:]...)
	return append(out, s.fetches[:s.fetchNxt]...)
}

// acceptLog takes a Poly upload: bounded, control characters removed, the
// last maxLogTail bytes kept per phone in memory.
func (s *Service) acceptLog(w http.ResponseWriter, r *http.Request, req Request, src netip.Addr, ua string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLogBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.logFetch(req.MAC, src, req.File, "log-too-large", "", ua)
			http.Error(w, "upload too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "bad upload", http.StatusBadRequest)
		return
	}
	clean := SanitizeLog(body, maxLogTail)
	s.mu.Lock()
	s.bootLogs[req.MAC] = clean
	s.mu.Unlock()
	s.logFetch(req.MAC, src, req.File, "log", "", ua)
	w.WriteHeader(http.StatusNoContent)
}

// BootLog returns the last upload a phone made.
func (s *Service) BootLog(mac string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.bootLogs[mac]...)
}

// SanitizeLog keeps the last max bytes of an uploaded log, as valid UTF-8
// with control characters other than newline and tab replaced.
func SanitizeLog(b []byte, max int) []byte {
	if len(b) > max {
		b = b[len(b)-max:]
	}
	s := strings.ToValidUTF8(string(b), "?")
	return []byte(strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s))
}

// isBanned reports whether src is under a local ban (PID 1 drops its
// packets too; this covers the window before the set is updated, and tests).
func (s *Service) isBanned(src netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.bans[src.String()]
	if ok && s.now().After(until) {
		delete(s.bans, src.String())
		return false
	}
	return ok
}

// ban cuts src off here and asks PID 1 to drop it; one host only (a phones
// zone must not lose its neighbours). s.mu held.
func (s *Service) banLocked(src netip.Addr, reason string) {
	if _, ok := s.bans[src.String()]; ok {
		return
	}
	if len(s.bans) >= s.deps.Limits.MaxSources {
		now := s.now()
		for k, until := range s.bans {
			if now.After(until) {
				delete(s.bans, k)
			}
		}
	}
	s.bans[src.String()] = s.now().Add(s.deps.Limits.BanFor)
	b := fwspec.Ban{Prefix: netip.PrefixFrom(src, src.BitLen()), Timeout: s.deps.Limits.BanFor, Reason: reason}
	select {
	case s.banq <- b:
	default: // PID 1 is behind; the local ban holds meanwhile
	}
	if s.deps.Security != nil {
		s.deps.Security.Record(logs.Event{Kind: KindProvBan, Source: src.String(), Reason: reason})
	}
}

// Banned returns the sources banned here and until when.
func (s *Service) Banned() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]time.Time, len(s.bans))
	for k, v := range s.bans {
		out[k] = v
	}
	return out
}
