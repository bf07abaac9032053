package backup

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// need finds a tool; CI must have it (.ci/deps), a developer may skip.
func need(t testing.TB, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		missing(t, fmt.Sprintf("%s (Debian package %s): %v", tool, pkg, err))
	}
	return p
}

// needRoot: CI runs the tests as root; a developer who is not may skip.
func needRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "needs root: "+why)
	}
}

// missing fails in CI (CI is set) and skips elsewhere, saying why.
func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// buffer is a goroutine-safe log of a server's output.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *buffer) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// start runs cmd in its own process group, stopped (group and all) at cleanup,
// and waits until addr accepts connections.
func start(t testing.TB, cmd *exec.Cmd, addr string) *buffer {
	t.Helper()
	out := &buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return out
		}
		select {
		case <-done:
			t.Fatalf("%s exited: %s", cmd.Path, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// sftpServer is Debian's OpenSSH serving SFTP on loopback to one user,
// chrooted, by password or key.
type sftpServer struct {
	host, user, password string
	port                 int
	hostKey              string // authorized_keys line
	clientKey            string // PEM private key in authorized_keys
	dir                  string // the user's upload directory, on the host
	log                  *buffer
}

const sftpUID = 4242

// startSFTP runs sshd in a private mount namespace where /etc/passwd,
// /etc/shadow and /etc/group name one more user (the host's files are not
// touched), chrooted to a directory under /run (every component of a
// chroot must be root-owned and not writable by others, which /tmp is not).
func startSFTP(t testing.TB) *sftpServer {
	t.Helper()
	needRoot(t, "sshd chroots the SFTP user and runs in a private mount namespace")
	sshd := need(t, "/usr/sbin/sshd", "openssh-server")
	need(t, "unshare", "util-linux")
	need(t, "openssl", "openssl")
	keygen := need(t, "ssh-keygen", "openssh-client")
	s := &sftpServer{host: "127.0.0.1", user: "edgepbxbk", password: "sftp-pw-" + randHex(), port: freePort(t)}

	root, err := os.MkdirTemp("/run", "edgepbx-sftp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	chroot := filepath.Join(root, "chroot")
	s.dir = filepath.Join(chroot, "upload")
	for _, d := range []string{root, chroot, s.dir, "/run/sshd"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(s.dir, sftpUID, sftpUID); err != nil {
		t.Fatal(err)
	}

	etc := t.TempDir()
	hash, err := exec.Command("openssl", "passwd", "-6", s.password).Output()
	if err != nil {
		t.Fatal(err)
	}
	extra := map[string]string{
		"passwd": fmt.Sprintf("%s:x:%d:%d::/upload:/bin/sh\n", s.user, sftpUID, sftpUID),
		"shadow": fmt.Sprintf("%s:%s:19000:0:99999:7:::\n", s.user, strings.TrimSpace(string(hash))),
		"group":  fmt.Sprintf("%s:x:%d:\n", s.user, sftpUID),
	}
	for name, line := range extra {
		base, err := os.ReadFile("/etc/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if len(base) > 0 && base[len(base)-1] != '\n' {
			base = append(base, '\n')
		}
		if err := os.WriteFile(filepath.Join(etc, name), append(base, line...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hk := filepath.Join(etc, "host_ed25519")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", hk).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(hk + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	s.hostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	s.clientKey = string(pem.EncodeToMemory(blk))
	cpub, _ := ssh.NewPublicKey(priv.Public())
	// sshd reads it as the user: outside the root-only temporary directory.
	authKeys := filepath.Join(root, "authorized_keys")
	if err := os.WriteFile(authKeys, ssh.MarshalAuthorizedKey(cpub), 0o644); err != nil {
		t.Fatal(err)
	}

	cfg := filepath.Join(etc, "sshd_config")
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s
PidFile none
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile %s
StrictModes no
PermitRootLogin no
AllowUsers %s
ChrootDirectory %s
ForceCommand internal-sftp
Subsystem sftp internal-sftp
AllowTcpForwarding no
X11Forwarding no
MaxAuthTries 6
LogLevel VERBOSE
`, s.port, hk, authKeys, s.user, chroot)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `mount --bind "$1/passwd" /etc/passwd && mount --bind "$1/shadow" /etc/shadow && ` +
		`mount --bind "$1/group" /etc/group && exec "$2" -D -e -f "$1/sshd_config"`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", etc, sshd)
	s.log = start(t, cmd, fmt.Sprintf("127.0.0.1:%d", s.port))
	return s
}

// files lists the upload directory on the host.
func (s *sftpServer) files(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// selfSigned makes a CA-less TLS certificate for 127.0.0.1 (PEM cert, key).
func selfSigned(t testing.TB) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "s3.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

var vgwOnce struct {
	sync.Once
	path string
	err  error
}

// versitygw builds the S3 server from testdata/s3server (its module is
// pinned by go.sum there) once per machine and go.sum.
func versitygw(t testing.TB) string {
	t.Helper()
	goBin := need(t, "go", "golang")
	vgwOnce.Do(func() {
		sum, err := os.ReadFile("testdata/s3server/go.sum")
		if err != nil {
			vgwOnce.err = err
			return
		}
		h := sha256.Sum256(sum)
		p := filepath.Join(os.TempDir(), "edgepbx-test-versitygw-"+hex.EncodeToString(h[:6]))
		if _, err := os.Stat(p); err == nil {
			vgwOnce.path = p
			return
		}
		tmp := p + ".tmp-" + randHex()
		cmd := exec.Command(goBin, "build", "-mod=readonly", "-o", tmp, "github.com/versity/versitygw/cmd/versitygw")
		cmd.Dir = "testdata/s3server"
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			vgwOnce.err = fmt.Errorf("build versitygw: %v: %s", err, out)
			return
		}
		vgwOnce.path, vgwOnce.err = p, os.Rename(tmp, p)
	})
	if vgwOnce.err != nil {
		// Offline outside CI (no module proxy) is a reason to skip; in CI
		// it is a failure.
		missing(t, vgwOnce.err.Error())
	}
	return vgwOnce.path
}

// s3Server is versitygw (posix backend) over HTTPS on loopback.
type s3Server struct {
	host, access, secret string
	port                 int
	ca                   string
	root                 string // gateway root: bucket directories
	log                  *buffer
}

func startS3(t testing.TB) *s3Server {
	t.Helper()
	bin := versitygw(t)
	s := &s3Server{host: "127.0.0.1", access: "edgepbxtest", secret: "s3-secret-" + randHex(), port: freePort(t),
		root: t.TempDir()}
	cert, key := selfSigned(t)
	s.ca = string(cert)
	dir := t.TempDir()
	for n, b := range map[string][]byte{"cert.pem": cert, "key.pem": key} {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", s.port)
	cmd := exec.Command(bin, "--port", addr, "--access", s.access, "--secret", s.secret,
		"--cert", filepath.Join(dir, "cert.pem"), "--key", filepath.Join(dir, "key.pem"),
		"posix", "--sidecar", t.TempDir(), s.root)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	s.log = start(t, cmd, addr)
	return s
}
