package backup

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/crypto/ssh"

	"github.com/edgepbx/edgepbx/firmware/audit"
)

var admin = Actor{Name: "root1", Source: "192.0.2.1"}

// scheduled gives b a backup key and a schedule keeping two dailies.
func scheduled(t *testing.T, b *Service) string {
	t.Helper()
	id, rcpt, err := b.GenerateKey(admin)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetSettings(Settings{Recipient: rcpt, Daily: 2}, admin); err != nil {
		t.Fatal(err)
	}
	return id
}

// days runs the schedule at noon on n consecutive days from the box clock.
func days(t *testing.T, b *box, n int) error {
	t.Helper()
	var errs []error
	for i := 0; i < n; i++ {
		b.clk.t = b.clk.t.Add(24 * time.Hour)
		errs = append(errs, b.backup.RunDue())
	}
	return errors.Join(errs...)
}

func localNames(t *testing.T, s *Service) []string {
	t.Helper()
	l, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range l {
		out = append(out, f.Name)
	}
	sort.Strings(out)
	return out
}

func backupNames(names []string) []string {
	var out []string
	for _, n := range names {
		if fileRE.MatchString(n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func status(t *testing.T, s *Service, kind string) TargetStatus {
	t.Helper()
	v, err := s.Targets()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range v {
		if x.Kind == kind && x.Status != nil {
			return *x.Status
		}
	}
	t.Fatalf("no status for %s", kind)
	return TargetStatus{}
}

func lastUpload(t *testing.T, b *box) audit.Entry {
	t.Helper()
	es, err := b.audit.Query(audit.Filter{Action: "backup.upload"})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) == 0 {
		t.Fatal("no backup.upload audit entry")
	}
	last := es[0]
	for _, e := range es {
		if e.Seq > last.Seq {
			last = e
		}
	}
	return last
}

func TestSFTPTarget(t *testing.T) {
	srv := startSFTP(t)
	b := newBox(t, "SFTP1")
	b.fill(t, 3)
	identity := scheduled(t, b.backup)
	cfg := TargetConfig{Enabled: true, Host: srv.host, Port: srv.port, User: srv.user, Path: "/upload"}
	if err := b.backup.SetTarget(TargetSFTP, cfg, TargetSecrets{Password: srv.password}, admin); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Trust on first use: the key is shown, nothing is sent until it is pinned.
	res, err := b.backup.TestTarget(ctx, TargetSFTP)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || res.HostKey != srv.hostKey || !strings.Contains(res.Message, res.Fingerprint) ||
		!strings.Contains(res.Message, "No key is pinned") {
		t.Fatalf("unpinned test: %+v (server key %s)", res, srv.hostKey)
	}
	if err := days(t, b, 1); err == nil || !strings.Contains(err.Error(), "No key is pinned") {
		t.Fatalf("push without a pinned key: %v", err)
	}
	if got := backupNames(srv.files(t)); len(got) != 0 {
		t.Fatalf("uploaded without a pinned key: %v", got)
	}
	if st := status(t, b.backup, TargetSFTP); st.OK || !strings.Contains(st.Message, "No key is pinned") {
		t.Fatalf("status: %+v", st)
	}
	if e := lastUpload(t, b); e.Outcome != audit.Failed || !strings.Contains(e.Detail, "No key is pinned") {
		t.Fatalf("audit: %+v", e)
	}

	// Pinned: the failed push is retried at the next schedule check.
	cfg.HostKey = res.HostKey
	if err := b.backup.SetTarget(TargetSFTP, cfg, TargetSecrets{}, admin); err != nil {
		t.Fatal(err)
	}
	if res, err := b.backup.TestTarget(ctx, TargetSFTP); err != nil || !res.OK || !strings.Contains(res.Message, "wrote a test file") {
		t.Fatalf("pinned test: %+v %v", res, err)
	}
	if err := b.backup.RunDue(); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got, want := backupNames(srv.files(t)), localNames(t, b.backup); !slices.Equal(got, want) || len(want) != 1 {
		t.Fatalf("after retry the server has %v, the box %v", got, want)
	}

	// Retention applies remotely: another box's file in the same
	// directory stays, this box's oldest daily goes.
	other := "edgepbx-OTHERBOX-daily-20200101T000000Z.age"
	if err := os.WriteFile(filepath.Join(srv.dir, other), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := days(t, b, 3); err != nil {
		t.Fatal(err)
	}
	got := backupNames(srv.files(t))
	want := append(localNames(t, b.backup), other)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("server %v, want %v", got, want)
	}
	dailies := 0
	for _, n := range got {
		if strings.Contains(n, "-SFTP1-daily-") {
			dailies++
		}
	}
	if dailies != 2 {
		t.Fatalf("%d dailies kept on the server, want 2: %v", dailies, got)
	}
	for _, n := range srv.files(t) {
		if strings.HasPrefix(n, tmpPrefix) {
			t.Fatalf("temporary file left: %s", n)
		}
	}
	if st := status(t, b.backup, TargetSFTP); !st.OK {
		t.Fatalf("status: %+v", st)
	}

	// Restore from the target: listed, fetched byte for byte, restored.
	list, err := b.backup.RemoteList(ctx, TargetSFTP)
	if err != nil {
		t.Fatal(err)
	}
	if list[0].Kind != Daily || !strings.Contains(list[0].Name, "SFTP1") {
		t.Fatalf("newest remote: %+v", list[0])
	}
	checkListBound(t, b, TargetSFTP, len(srv.files(t)))
	id, err := b.backup.RemoteFetch(ctx, TargetSFTP, list[0].Name, admin)
	if err != nil {
		t.Fatal(err)
	}
	fetched, _ := os.ReadFile(filepath.Join(b.backup.cfg.Dir, "."+id))
	local, _ := os.ReadFile(filepath.Join(b.backup.cfg.Dir, list[0].Name))
	if len(local) == 0 || !bytes.Equal(fetched, local) {
		t.Fatalf("fetched %d bytes, local %d", len(fetched), len(local))
	}
	if _, err := b.backup.RestoreUpload(id, Decryption{Identity: identity}, admin); err != nil {
		t.Fatalf("restore from the target: %v", err)
	}
	if _, err := b.backup.RemoteFetch(ctx, TargetSFTP, "edgepbx-SFTP1-daily-20000101T000000Z.age", admin); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch of a missing file: %v", err)
	}

	// A server with another key is refused before authenticating.
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _ := ssh.NewPublicKey(otherPriv.Public())
	bad := cfg
	bad.HostKey = string(ssh.MarshalAuthorizedKey(otherPub))
	if err := b.backup.SetTarget(TargetSFTP, bad, TargetSecrets{}, admin); err != nil {
		t.Fatal(err)
	}
	res, err = b.backup.TestTarget(ctx, TargetSFTP)
	if err != nil || res.OK || !strings.Contains(res.Message, "host key mismatch") ||
		!strings.Contains(res.Message, ssh.FingerprintSHA256(otherPub)) {
		t.Fatalf("wrong host key: %+v %v", res, err)
	}
	before := srv.files(t)
	if err := days(t, b, 1); err == nil || !strings.Contains(err.Error(), "host key mismatch") {
		t.Fatalf("push to a server with another key: %v", err)
	}
	if e := lastUpload(t, b); e.Outcome != audit.Failed || !strings.Contains(e.Detail, "host key mismatch") {
		t.Fatalf("audit: %+v", e)
	}
	if after := srv.files(t); !slices.Equal(before, after) {
		t.Fatalf("files changed behind a wrong host key: %v → %v", before, after)
	}

	// A wrong password is refused in words; a key logs in.
	if err := b.backup.SetTarget(TargetSFTP, cfg, TargetSecrets{Password: "wrong-password"}, admin); err != nil {
		t.Fatal(err)
	}
	res, err = b.backup.TestTarget(ctx, TargetSFTP)
	if err != nil || res.OK || !strings.Contains(res.Message, `refused user "edgepbxbk"`) {
		t.Fatalf("wrong password: %+v %v", res, err)
	}
	if err := b.backup.SetTarget(TargetSFTP, cfg, TargetSecrets{PrivateKey: srv.clientKey}, admin); err != nil {
		t.Fatal(err)
	}
	if res, err := b.backup.TestTarget(ctx, TargetSFTP); err != nil || !res.OK {
		t.Fatalf("key login: %+v %v\n%s", res, err, srv.log)
	}
	// The host-key failure of the last schedule is retried now.
	if err := b.backup.RunDue(); err != nil {
		t.Fatal(err)
	}
	if st := status(t, b.backup, TargetSFTP); !st.OK || !strings.Contains(st.Message, "1 backup(s) uploaded") {
		t.Fatalf("status after the retry: %+v", st)
	}
}

func TestS3Target(t *testing.T) {
	srv := startS3(t)
	ctx := context.Background()
	mc, err := minio.New(srv.host+":"+itoa(srv.port), &minio.Options{Creds: credentials.NewStaticV4(srv.access, srv.secret, ""),
		Secure: true, Transport: mustTransport(t, srv.ca)})
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.MakeBucket(ctx, "pbx-backups", minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v\n%s", err, srv.log)
	}
	objects := func() []string {
		var out []string
		for o := range mc.ListObjects(ctx, "pbx-backups", minio.ListObjectsOptions{Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			out = append(out, o.Key)
		}
		sort.Strings(out)
		return out
	}

	b := newBox(t, "S3BOX1")
	b.fill(t, 3)
	identity := scheduled(t, b.backup)
	cfg := TargetConfig{Enabled: true, Host: srv.host, Port: srv.port, User: srv.access, Bucket: "pbx-backups",
		Prefix: "site-a", Region: "us-east-1"}
	if err := b.backup.SetTarget(TargetS3, cfg, TargetSecrets{Password: srv.secret}, admin); err != nil {
		t.Fatal(err)
	}
	// The box's trust store does not know the server's private CA.
	res, err := b.backup.TestTarget(ctx, TargetS3)
	if err != nil || res.OK || !strings.Contains(res.Message, "not trusted") || !strings.Contains(res.Message, "upload that CA") {
		t.Fatalf("untrusted certificate: %+v %v", res, err)
	}
	cfg.CACert = srv.ca
	if err := b.backup.SetTarget(TargetS3, cfg, TargetSecrets{}, admin); err != nil {
		t.Fatal(err)
	}
	if res, err := b.backup.TestTarget(ctx, TargetS3); err != nil || !res.OK {
		t.Fatalf("test: %+v %v\n%s", res, err, srv.log)
	}

	other := "site-a/edgepbx-OTHERBOX-daily-20200101T000000Z.age"
	if _, err := mc.PutObject(ctx, "pbx-backups", other, strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := days(t, b, 4); err != nil {
		t.Fatalf("%v\n%s", err, srv.log)
	}
	var want []string
	for _, n := range localNames(t, b.backup) {
		want = append(want, "site-a/"+n)
	}
	want = append(want, other)
	sort.Strings(want)
	got := objects()
	if !slices.Equal(got, want) {
		t.Fatalf("bucket %v, want %v", got, want)
	}
	if n := strings.Count(strings.Join(got, " "), "-S3BOX1-daily-"); n != 2 {
		t.Fatalf("%d dailies kept in the bucket, want 2", n)
	}
	if st := status(t, b.backup, TargetS3); !st.OK {
		t.Fatalf("status %+v", st)
	}

	list, err := b.backup.RemoteList(ctx, TargetS3)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(want) || list[0].Kind != Daily {
		t.Fatalf("remote list %+v", list)
	}
	checkListBound(t, b, TargetS3, len(objects()))
	id, err := b.backup.RemoteFetch(ctx, TargetS3, list[0].Name, admin)
	if err != nil {
		t.Fatal(err)
	}
	fetched, _ := os.ReadFile(filepath.Join(b.backup.cfg.Dir, "."+id))
	local, _ := os.ReadFile(filepath.Join(b.backup.cfg.Dir, list[0].Name))
	if len(local) == 0 || !bytes.Equal(fetched, local) {
		t.Fatalf("fetched %d bytes, local %d", len(fetched), len(local))
	}
	if _, err := b.backup.RestoreUpload(id, Decryption{Identity: identity}, admin); err != nil {
		t.Fatalf("restore from the bucket: %v", err)
	}

	for _, c := range []struct {
		name string
		mod  func(*TargetConfig)
		sec  TargetSecrets
		want string
	}{
		{"wrong secret", func(*TargetConfig) {}, TargetSecrets{Password: "not-the-secret"}, `refused access key "edgepbxtest"`},
		{"missing bucket", func(c *TargetConfig) { c.Bucket = "no-such-bucket" }, TargetSecrets{Password: srv.secret}, `bucket "no-such-bucket" does not exist`},
		{"nothing listening", func(c *TargetConfig) { c.Port = freePort(t) }, TargetSecrets{Password: srv.secret}, "cannot connect to https://127.0.0.1:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad := cfg
			c.mod(&bad)
			if err := b.backup.SetTarget(TargetS3, bad, c.sec, admin); err != nil {
				t.Fatal(err)
			}
			res, err := b.backup.TestTarget(ctx, TargetS3)
			if err != nil || res.OK || !strings.Contains(res.Message, c.want) {
				t.Fatalf("%+v %v", res, err)
			}
			before := objects()
			if err := days(t, b, 1); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("push: %v", err)
			}
			if e := lastUpload(t, b); e.Outcome != audit.Failed || !strings.Contains(e.Detail, c.want) {
				t.Fatalf("audit: %+v", e)
			}
			if st := status(t, b.backup, TargetS3); st.OK || !strings.Contains(st.Message, "tried again at the next schedule") {
				t.Fatalf("status: %+v", st)
			}
			if after := objects(); !slices.Equal(before, after) {
				t.Fatalf("objects changed: %v → %v", before, after)
			}
		})
	}
	// Back to the right settings: the next check uploads what was missed.
	if err := b.backup.SetTarget(TargetS3, cfg, TargetSecrets{Password: srv.secret}, admin); err != nil {
		t.Fatal(err)
	}
	if err := b.backup.RunDue(); err != nil {
		t.Fatal(err)
	}
	if st := status(t, b.backup, TargetS3); !st.OK {
		t.Fatalf("status after the retry: %+v", st)
	}
}

// TestTargetSettings: refusals name the field and change nothing;
// credentials are never shown and never on disk in clear.
func TestTargetSettings(t *testing.T) {
	b := newBox(t, "SET1")
	good := TargetConfig{Host: "backup.example.com", User: "pbx", Path: "/srv/backups"}
	goodS3 := TargetConfig{Host: "s3.example.com", User: "AKIAEXAMPLE", Bucket: "pbx-backups", Prefix: "a/b"}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	blk, _ := ssh.MarshalPrivateKey(priv, "")
	for _, c := range []struct {
		kind  string
		mod   func(*TargetConfig)
		sec   TargetSecrets
		field string
	}{
		{"ftp", func(*TargetConfig) {}, TargetSecrets{Password: "x"}, "kind"},
		{TargetSFTP, func(c *TargetConfig) { c.Host = "sftp://x" }, TargetSecrets{Password: "x"}, "host"},
		{TargetSFTP, func(c *TargetConfig) { c.Host = "" }, TargetSecrets{Password: "x"}, "host"},
		{TargetSFTP, func(c *TargetConfig) { c.Port = 70000 }, TargetSecrets{Password: "x"}, "port"},
		{TargetSFTP, func(c *TargetConfig) { c.User = "a b" }, TargetSecrets{Password: "x"}, "user"},
		{TargetSFTP, func(c *TargetConfig) { c.Path = "/srv/../etc" }, TargetSecrets{Password: "x"}, "path"},
		{TargetSFTP, func(c *TargetConfig) { c.Path = "a\nb" }, TargetSecrets{Password: "x"}, "path"},
		{TargetSFTP, func(c *TargetConfig) { c.HostKey = "ssh-ed25519 notbase64" }, TargetSecrets{Password: "x"}, "host_key"},
		{TargetSFTP, func(*TargetConfig) {}, TargetSecrets{PrivateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nxx"}, "private_key"},
		{TargetSFTP, func(*TargetConfig) {}, TargetSecrets{}, "password"},
		{TargetSFTP, func(*TargetConfig) {}, TargetSecrets{Password: strings.Repeat("x", 257)}, "password"},
		{TargetSFTP, func(c *TargetConfig) { c.Bucket = "b" }, TargetSecrets{Password: "x"}, "bucket"},
		{TargetS3, func(c *TargetConfig) { c.Bucket = "A" }, TargetSecrets{Password: "x"}, "bucket"},
		{TargetS3, func(c *TargetConfig) { c.Prefix = "../x" }, TargetSecrets{Password: "x"}, "prefix"},
		{TargetS3, func(c *TargetConfig) { c.Region = "US EAST" }, TargetSecrets{Password: "x"}, "region"},
		{TargetS3, func(c *TargetConfig) { c.CACert = "not pem" }, TargetSecrets{Password: "x"}, "ca_cert"},
		{TargetS3, func(*TargetConfig) {}, TargetSecrets{}, "password"},
		{TargetS3, func(c *TargetConfig) { c.HostKey = "x" }, TargetSecrets{Password: "x"}, "path"},
	} {
		cfg := good
		if c.kind == TargetS3 {
			cfg = goodS3
		}
		c.mod(&cfg)
		err := b.backup.SetTarget(c.kind, cfg, c.sec, admin)
		if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "field "+c.field+":") {
			t.Errorf("%s %+v %+v: %v (want field %s)", c.kind, cfg, c.sec, err, c.field)
		}
	}
	if v, _ := b.backup.Targets(); len(v) != 0 {
		t.Fatalf("refused settings stored: %+v", v)
	}

	pw, s3secret := "sftp-password-needle-1", "s3-secret-needle-2"
	if err := b.backup.SetTarget(TargetSFTP, good, TargetSecrets{Password: pw, PrivateKey: string(pem.EncodeToMemory(blk))}, admin); err != nil {
		t.Fatal(err)
	}
	if err := b.backup.SetTarget(TargetS3, goodS3, TargetSecrets{Password: s3secret}, admin); err != nil {
		t.Fatal(err)
	}
	v, err := b.backup.Targets()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(v)
	if len(v) != 2 || !v[0].PasswordSet || !v[0].PrivateKeySet || !v[1].PasswordSet || v[1].PrivateKeySet ||
		bytes.Contains(js, []byte("needle")) || bytes.Contains(js, []byte("PRIVATE KEY")) {
		t.Fatalf("views: %s", js)
	}
	// The audit entries and the store file hold no credential in clear.
	b.db.Close()
	raw, err := os.ReadFile(filepath.Join(b.dir, "edgepbx.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, needle := range []string{pw, s3secret, "OPENSSH PRIVATE KEY"} {
		if bytes.Contains(raw, []byte(needle)) {
			t.Fatalf("%q in clear in the store", needle)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// checkListBound: a target listing more entries than Limits.MaxRemoteFiles
// is refused in words (have is what the target holds now).
func checkListBound(t *testing.T, b *box, kind string, have int) {
	t.Helper()
	lim := DefaultLimits()
	lim.MaxRemoteFiles = have - 1
	_, err := b.service(t, lim).RemoteList(context.Background(), kind)
	if err == nil || !strings.Contains(err.Error(), "more than "+itoa(have-1)+" entries") {
		t.Fatalf("listing %d entries with a bound of %d: %v", have, have-1, err)
	}
	lim.MaxRemoteFiles = have
	if _, err := b.service(t, lim).RemoteList(context.Background(), kind); err != nil {
		t.Fatalf("listing %d entries with a bound of %d: %v", have, have, err)
	}
}

// mustTransport trusts only caPEM (the test server's certificate).
func mustTransport(t testing.TB, caPEM string) *http.Transport {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatal("bad CA")
	}
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
}
