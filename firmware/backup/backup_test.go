package backup

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/mailer"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/privacy"
	"github.com/edgepbx/edgepbx/firmware/provision"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/firmware/store"
)

const (
	realm     = "pbx.example.com"
	rootPW    = "tr7#Kq2!vm9Lw"
	opsPW     = "Zq8-Pa55word!x"
	extPW     = "ext-secret-101x"
	trunkPW   = "trunk-secret-itsp-77"
	telTrunk  = "telephony-trunk-pw-99"
	setupCode = "AAAA-BBBB-CCCC"
)

type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

// box is one appliance's data: its own store, device key and directory.
type box struct {
	dir    string
	key    []byte
	db     *store.DB
	clk    *clock
	audit  *audit.Log
	backup *Service
	id     Identity
}

func resealers() map[string]store.Resealer {
	return map[string]store.Resealer{
		auth.AccountsBucket:       auth.ResealAccount,
		sipedge.ExtensionsBucket:  sipedge.ResealExtension,
		sipedge.TrunksBucket:      sipedge.ResealTrunk,
		pbxconfig.TelephonyBucket: pbxconfig.ResealTelephony,
		certs.Bucket:              certs.ResealCertificate,
		certs.ACMEBucket:          certs.ResealACME,
		provision.SecretsBucket:   provision.ResealSecrets,
		audit.MetaBucket:          audit.ResealMeta,
		privacy.KeysBucket:        privacy.ResealKeys,
		mailer.Bucket:             mailer.ResealSettings,
	}
}

func newBox(t testing.TB, serial string) *box {
	t.Helper()
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(dir, "edgepbx.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	b := &box{dir: dir, key: key, db: db, clk: clk, audit: audit.New(db, clk),
		id: Identity{Serial: serial, InstallID: "inst-" + serial, Firmware: "1.2.3"}}
	b.backup = b.service(t, DefaultLimits())
	return b
}

func (b *box) service(t testing.TB, lim Limits) *Service {
	s, err := New(Config{DB: b.db, Audit: b.audit, Box: b.id, Dir: filepath.Join(b.dir, "backups"),
		Resealers: resealers(), BoxLocal: DefaultBoxLocal(certs.Bucket, certs.BoxLocalKeys()),
		Limits: lim, Now: b.clk.Now, Log: quiet(), ScryptWorkFactor: 10})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func (b *box) auth(t testing.TB) *auth.Service {
	t.Helper()
	s, err := auth.New(auth.Config{DB: b.db, Clock: b.clk, Audit: b.audit,
		Hasher:    auth.NewHasher(auth.Params{Time: 1, MemoryKiB: 1024, Threads: 1}, 2, 16),
		SetupCode: auth.SetupCode(setupCode), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var client = auth.Client{Addr: netip.MustParseAddr("192.0.2.10")}

// fill gives box b every kind of data a backup carries, through the
// owners' APIs, and returns the TOTP secret of account "ops".
func (b *box) fill(t testing.TB, cdrs int) string {
	t.Helper()
	ctx := context.Background()
	as := b.auth(t)
	if _, err := as.Claim(ctx, client, setupCode, "root1", rootPW); err != nil {
		t.Fatal(err)
	}
	root := auth.Principal{Username: "root1", Role: auth.RoleAdmin}
	if err := as.CreateAccount(ctx, root, client, auth.Proof{Password: rootPW}, "ops", auth.RoleAdmin, opsPW); err != nil {
		t.Fatal(err)
	}
	ops := auth.Principal{Username: "ops", Role: auth.RoleAdmin}
	en, err := as.BeginTOTP(ctx, ops, client, auth.Proof{Password: opsPW})
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totp.GenerateCode(en.Secret, b.clk.Now())
	if _, err := as.ConfirmTOTP(ops, "", code); err != nil {
		t.Fatal(err)
	}
	ext, err := sipedge.LoadExtensions(b.db, realm)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"101", "102"} {
		if err := ext.Set(u, extPW+u); err != nil {
			t.Fatal(err)
		}
	}
	if err := sipedge.SetTrunkPassword(b.db, "itsp", trunkPW); err != nil {
		t.Fatal(err)
	}
	if err := b.db.Update(func(tx *store.Tx) error {
		return tx.PutSecret(pbxconfig.TelephonyBucket, "trunk/itsp/password", []byte(telTrunk))
	}); err != nil {
		t.Fatal(err)
	}
	cm, err := certs.Load(b.db, certs.Identity{Serial: b.id.Serial}, certs.WithClock(b.clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if err := cm.Install(uploadCert(t, b.clk.Now()), []string{realm}, certs.SourceUpload); err != nil {
		t.Fatal(err)
	}
	cs := cdr.New(b.db)
	for i := range cdrs {
		start := b.clk.Now().Add(-time.Duration(i+1) * time.Minute)
		if err := cs.Write(cdr.Record{ID: fmt.Sprintf("c%07d", i), From: "101", To: "102", Dialled: "102",
			Direction: "internal", Start: start, Answer: start.Add(2 * time.Second), End: start.Add(30 * time.Second), Result: cdr.Answered}); err != nil {
			t.Fatal(err)
		}
	}
	// Box-local data that must neither leave nor be replaced.
	if err := b.db.Update(func(tx *store.Tx) error {
		return tx.Put("license.state", "state", "licence of "+b.id.Serial)
	}); err != nil {
		t.Fatal(err)
	}
	return en.Secret
}

func uploadCert(t testing.TB, now time.Time) *certs.Bundle {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: realm}, DNSNames: []string{realm},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return &certs.Bundle{Chain: [][]byte{der}, Key: k}
}

// dump is every bucket's raw content: "nothing changed" compares these.
func dump(t testing.TB, db *store.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := db.View(func(tx *store.Tx) error {
		names, err := tx.Buckets()
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := tx.ForEach(n, func(k string, v []byte) error {
				out[n+"/"+k] = string(v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func makeBackup(t testing.TB, b *box, e Encryption) string {
	t.Helper()
	f, err := b.backup.Create(Manual, e, Actor{Name: "root1"})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(b.backup.cfg.Dir, f.Name)
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		other bool
	}{{"same box", false}, {"other box", true}} {
		t.Run(tc.name, func(t *testing.T) {
			a := newBox(t, "SRCBOX1")
			secret := a.fill(t, 50)
			idA, _, err := a.backup.GenerateKey(Actor{Name: "root1"})
			if err != nil {
				t.Fatal(err)
			}
			before := dump(t, a.db)
			headA, err := a.audit.Head()
			if err != nil {
				t.Fatal(err)
			}
			path := makeBackup(t, a, Encryption{})

			dst := a
			if tc.other {
				dst = newBox(t, "DSTBOX2")
				dst.fill(t, 3) // the target has its own, different data
			} else {
				// Changes after the backup that the restore rolls back.
				if err := sipedge.SetTrunkPassword(a.db, "itsp", "changed-after-backup"); err != nil {
					t.Fatal(err)
				}
			}
			prevHead, err := dst.audit.Head()
			if err != nil {
				t.Fatal(err)
			}
			selfBefore := dump(t, dst.db)["certs/selfsigned"]
			licBefore := dump(t, dst.db)["license.state/state"]

			m, err := dst.backup.Restore(path, Decryption{Identity: idA}, Actor{Name: "root1", Source: "192.0.2.10"})
			if err != nil {
				t.Fatal(err)
			}
			if m.Serial != "SRCBOX1" {
				t.Fatalf("manifest serial %q", m.Serial)
			}
			after := dump(t, dst.db)
			compareRestored(t, before, after, dst)
			if after["certs/selfsigned"] != selfBefore || after["license.state/state"] != licBefore {
				t.Fatal("restore replaced box-local data (self-signed certificate or licence state)")
			}
			r, ok, err := dst.backup.LastRestore()
			if err != nil || !ok || r.FromSerial != "SRCBOX1" || r.OtherBox != tc.other {
				t.Fatalf("last restore %+v %v %v", r, ok, err)
			}

			// The services, started again on the restored store, work with the
			// same credentials under this box's device key.
			checkLogins(t, dst, secret)
			checkDigest(t, dst.db)
			checkSecrets(t, dst)
			checkCDRs(t, a, dst)

			// The audit chain is the backup's, continued by a restore entry.
			res, err := dst.audit.VerifyFull()
			if err != nil {
				t.Fatal(err)
			}
			if res.Entries <= headA.Seq {
				t.Fatalf("chain has %d entries, backup had %d", res.Entries, headA.Seq)
			}
			hash, found, err := dst.audit.HashAt(headA.Seq)
			if err != nil || !found || hash != headA.Hash {
				t.Fatalf("restored chain differs at the backup's head: %v %v", found, err)
			}
			last, err := dst.audit.After(headA.Seq, 100)
			if err != nil {
				t.Fatal(err)
			}
			if !hasAction(last, "backup.restore") {
				t.Fatalf("no restore entry after the backup's head: %+v", last)
			}
			// The chain the restore replaced is kept, entry for entry.
			archived, err := filepath.Glob(filepath.Join(dst.backup.cfg.Dir, "audit-replaced-*.jsonl"))
			if err != nil || len(archived) != 1 {
				t.Fatalf("archived chain: %v %v", archived, err)
			}
			old, err := os.ReadFile(archived[0])
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(old), "\n"); uint64(n) != prevHead.Seq || !strings.Contains(string(old), prevHead.Hash) {
				t.Fatalf("archive has %d entries, chain had %d", n, prevHead.Seq)
			}
		})
	}
}

func hasAction(es []audit.Entry, action string) bool {
	for _, e := range es {
		if e.Action == action && e.Outcome == audit.OK {
			return true
		}
	}
	return false
}

// compareRestored checks field by field: every exported key came back, and
// every value is identical except sealed fields (new nonces, new key) and
// the audit head, which the restore entry moves.
func compareRestored(t *testing.T, before, after map[string]string, dst *box) {
	t.Helper()
	sealed := map[string]bool{auth.AccountsBucket: true, sipedge.ExtensionsBucket: true, sipedge.TrunksBucket: true,
		certs.Bucket: true, certs.ACMEBucket: true, pbxconfig.TelephonyBucket: true}
	for k, v := range before {
		bucket := k[:strings.Index(k, "/")]
		if _, local := DefaultBoxLocal(certs.Bucket, nil)[bucket]; local || k == "certs/selfsigned" || k == "certs/pending" {
			continue
		}
		got, ok := after[k]
		switch {
		case !ok:
			t.Errorf("%s missing after restore", k)
		case k == "audit.meta/head":
		case sealed[bucket]:
			if got == v && strings.Contains(k, "password") {
				t.Errorf("%s: sealed value copied, not sealed again", k)
			}
		case got != v:
			t.Errorf("%s differs:\n%s\n%s", k, v, got)
		}
	}
	for k := range after {
		bucket := k[:strings.Index(k, "/")]
		if _, ok := before[k]; !ok && bucket != "audit.log" && bucket != "audit.meta" && bucket != "backup.state" &&
			bucket != "backup.settings" && bucket != "meta" && bucket != "license.state" && bucket != "auth.sessions" &&
			bucket != "auth.challenges" && k != "certs/selfsigned" && bucket != "logs.events" {
			t.Errorf("%s appeared after restore (target data not replaced)", k)
		}
	}
}

func checkLogins(t *testing.T, b *box, totpSecret string) {
	t.Helper()
	ctx := context.Background()
	b.clk.t = b.clk.t.Add(time.Minute) // a TOTP code is good once
	as := b.auth(t)
	if ok, err := as.Claimed(); err != nil || !ok {
		t.Fatalf("restored box not claimed: %v", err)
	}
	if _, err := as.Login(ctx, client, "root1", rootPW); err != nil {
		t.Fatalf("root1 login after restore: %v", err)
	}
	res, err := as.Login(ctx, client, "ops", opsPW)
	if err != nil || res.Challenge == "" {
		t.Fatalf("ops login after restore: %+v %v", res, err)
	}
	code, _ := totp.GenerateCode(totpSecret, b.clk.Now())
	res, err = as.LoginSecondFactor(ctx, client, res.Challenge, code)
	if err != nil || res.Session == nil {
		t.Fatalf("ops second factor after restore (TOTP seed resealed?): %+v %v", res, err)
	}
	if _, err := as.Login(ctx, client, "root1", "wrong-password-1"); err == nil {
		t.Fatal("wrong password accepted")
	}
}

// checkDigest answers a real challenge of the registrar's authenticator as a
// phone would, with the extension's password.
func checkDigest(t *testing.T, db *store.DB) {
	t.Helper()
	ext, err := sipedge.LoadExtensions(db, realm)
	if err != nil {
		t.Fatal(err)
	}
	nonces, err := sipedge.NewNonces(time.Minute, 100)
	if err != nil {
		t.Fatal(err)
	}
	a, err := sipedge.NewAuthenticator(realm, []string{sipedge.AlgMD5}, nonces, ext)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	src := netip.MustParseAddr("192.0.2.20")
	for _, tc := range []struct {
		pw   string
		want sipedge.AuthResult
	}{{extPW + "101", sipedge.AuthOK}, {"not-the-password", sipedge.AuthFailed}} {
		ch := a.Challenges(now, src, false)[0]
		nonce := between(ch, `nonce="`, `"`)
		ha1 := md5hex("101:" + realm + ":" + tc.pw)
		ha2 := md5hex("REGISTER:sip:" + realm)
		resp := md5hex(ha1 + ":" + nonce + ":00000001:0a4f113b:auth:" + ha2)
		hdr := fmt.Sprintf(`Digest username="101", realm="%s", nonce="%s", uri="sip:%s", response="%s", algorithm=MD5, qop=auth, nc=00000001, cnonce="0a4f113b"`,
			realm, nonce, realm, resp)
		if got, _ := a.Verify(now, src, "REGISTER", hdr); got != tc.want {
			t.Fatalf("digest with %q: %v, want %v", tc.pw, got, tc.want)
		}
	}
}

func between(s, a, b string) string {
	i := strings.Index(s, a) + len(a)
	return s[i : i+strings.Index(s[i:], b)]
}

func md5hex(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }

func checkSecrets(t *testing.T, b *box) {
	db := b.db
	t.Helper()
	if err := db.View(func(tx *store.Tx) error {
		pw, ok, err := tx.GetSecret(pbxconfig.TelephonyBucket, "trunk/itsp/password")
		if err != nil || !ok || string(pw) != telTrunk {
			return fmt.Errorf("telephony trunk password: %q %v %v", pw, ok, err)
		}
		var sealed []byte
		if _, err := tx.Get(sipedge.TrunksBucket, "itsp", &sealed); err != nil {
			return err
		}
		got, err := db.Unseal(sealed, "sip/trunk/itsp")
		if err != nil || string(got) != trunkPW {
			return fmt.Errorf("sip trunk password: %q %v", got, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cm, err := certs.Load(db, certs.Identity{Serial: "whatever"}, certs.WithClock(b.clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if cur := cm.Current(); cur.Source != certs.SourceUpload || cur.Subject == "" {
		t.Fatalf("uploaded certificate not restored: %+v", cur)
	}
}

func checkCDRs(t *testing.T, src, dst *box) {
	t.Helper()
	from, to := time.Time{}, src.clk.Now().Add(time.Hour)
	want, err := cdr.New(src.db).Range(from, to, 1000)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cdr.New(dst.db).Range(from, to, 1000)
	if err != nil {
		t.Fatal(err)
	}
	wj, _ := json.Marshal(want)
	gj, _ := json.Marshal(got)
	if len(want) == 0 || !bytes.Equal(wj, gj) {
		t.Fatalf("CDRs differ: %d vs %d records", len(want), len(got))
	}
}
