// Command licensed is the reference vendor licence / phone-home server.
//
//	licensed keys -out DIR                 # vendor.key (private, 0600) and vendor.pub
//	licensed serve -db DB -key DIR/vendor.key -listen 127.0.0.1:8443 \
//	        [-tls-cert C -tls-key K | -dev-ca-out ca.pem] [-admin-token-file T]
//	licensed issue -db DB -id LIC -days 365 [-max-ext 50 -max-trunks 4]
//
// DB is a bbolt file (PATH or bolt:PATH, the default licensed.db: one
// process) or a PostgreSQL URL (postgres://…: any number of replicas on one
// database; the schema is migrated at start). With an admin token, the
// fleet view is at /fleet (API /admin/fleet) and Prometheus metrics at
// /admin/metrics. See docs/licensed.md.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/license"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "licensed:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: licensed keys|serve|issue [flags]")
	}
	switch args[0] {
	case "keys":
		return cmdKeys(args[1:])
	case "serve":
		return cmdServe(args[1:])
	case "issue":
		return cmdIssue(args[1:])
	}
	return fmt.Errorf("unknown command %q", args[0])
}

const privPrefix = "ed25519-private:"

func cmdKeys(args []string) error {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	out := fs.String("out", ".", "directory for vendor.key and vendor.pub")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	keyPath := filepath.Join(*out, "vendor.key")
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s (refusing to overwrite a key): %w", keyPath, err)
	}
	if _, err := fmt.Fprintln(f, privPrefix+base64.StdEncoding.EncodeToString(priv.Seed())); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	pubText := license.FormatPublicKey(pub)
	if err := os.WriteFile(filepath.Join(*out, "vendor.pub"), []byte(pubText+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Println(pubText)
	return nil
}

func readPrivateKey(path string) (ed25519.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b64, ok := strings.CutPrefix(strings.TrimSpace(string(raw)), privPrefix)
	if !ok {
		return nil, fmt.Errorf("%s: not a licensed key file", path)
	}
	seed, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s: bad key", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func cmdServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	dbPath := fs.String("db", "licensed.db", dbUsage)
	keyPath := fs.String("key", "vendor.key", "vendor signing key from 'licensed keys'")
	listen := fs.String("listen", "127.0.0.1:8443", "HTTPS listen address")
	certFile := fs.String("tls-cert", "", "TLS certificate (PEM)")
	keyFile := fs.String("tls-key", "", "TLS key (PEM)")
	devCA := fs.String("dev-ca-out", "", "without -tls-cert: write the generated self-signed certificate here for boxes to trust")
	tokenFile := fs.String("admin-token-file", "", "file holding the admin API bearer token (no file: admin API off)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	priv, err := readPrivateKey(*keyPath)
	if err != nil {
		return err
	}
	var token string
	if *tokenFile != "" {
		raw, err := os.ReadFile(*tokenFile)
		if err != nil {
			return err
		}
		token = strings.TrimSpace(string(raw))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	db, err := openStore(ctx, *dbPath, log)
	if err != nil {
		return err
	}
	defer db.Close()
	srv, err := phonehome.NewWithStore(db, priv, token, time.Now, log)
	if err != nil {
		return err
	}
	var cert tls.Certificate
	if *certFile != "" {
		if cert, err = tls.LoadX509KeyPair(*certFile, *keyFile); err != nil {
			return err
		}
	} else if cert, err = selfSigned(*listen, *devCA); err != nil {
		return err
	}
	if len(cert.Certificate) > 1 {
		// Every certificate sent costs each new box's first check-in.
		log.Warn("licensed: the TLS chain has more than the leaf; boxes trusting the issuing CA need only the leaf", "certificates", len(cert.Certificate))
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		TLSConfig:         srv.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	go func() {
		<-ctx.Done()
		hs.Shutdown(context.Background())
	}()
	// The address line lets scripts and tests use -listen 127.0.0.1:0.
	fmt.Printf("licensed: listening on https://%s\n", ln.Addr())
	if err := hs.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// selfSigned makes a development certificate for the listen host (and
// loopback), and writes it where -dev-ca-out says for boxes to trust.
func selfSigned(listen, out string) (tls.Certificate, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, certPEM, err := phonehome.DevCertificate("localhost", "127.0.0.1", "::1", host)
	if err != nil {
		return tls.Certificate{}, err
	}
	if out != "" {
		if err := os.WriteFile(out, certPEM, 0o644); err != nil {
			return tls.Certificate{}, err
		}
	}
	return cert, nil
}

func cmdIssue(args []string) error {
	fs := flag.NewFlagSet("issue", flag.ContinueOnError)
	dbPath := fs.String("db", "licensed.db", dbUsage)
	id := fs.String("id", "", "licence id")
	days := fs.Int("days", 365, "validity in days")
	maxExt := fs.Int("max-ext", 50, "maximum extensions")
	maxTrunks := fs.Int("max-trunks", 4, "maximum trunks")
	if err := fs.Parse(args); err != nil {
		return err
	}
	db, err := openStore(context.Background(), *dbPath, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	defer db.Close()
	// Issuing needs no signing key: only answers are signed.
	srv, err := phonehome.NewWithStore(db, make(ed25519.PrivateKey, ed25519.PrivateKeySize), "", time.Now, nil)
	if err != nil {
		return err
	}
	return srv.PutLicence(phonehome.Licence{ID: *id, ValidUntil: time.Now().Add(time.Duration(*days) * 24 * time.Hour),
		MaxExtensions: *maxExt, MaxTrunks: *maxTrunks})
}

const dbUsage = "database: a bbolt file (PATH or bolt:PATH; one process) or postgres://… (replicas share it)"

// openStore gives up on an unreachable database after a while rather than
// hang a start-up script.
func openStore(ctx context.Context, db string, log *slog.Logger) (phonehome.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return phonehome.OpenStore(ctx, db, log)
}
