// Command edgepbxd is the appliance's services daemon. PID 1 starts it as an
// unprivileged uid with the device secrets on fd 3; it owns the store, the
// certificates and every network service: the admin UI/API and /healthz on
// HTTPS, the SIP edge, the security log and the daily licence check-in, all
// constructed in newDaemon and started from daemon.services.
//
// With --dev DIR it runs on a development host without PID 1: it makes its
// own identity in DIR and listens on loopback only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// exitStayDown tells PID 1 not to restart us: the same input would fail
// again (bad bootstrap, running as root, a store from newer firmware).
const exitStayDown = 125

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

// errStayDown marks failures a restart cannot fix.
var errStayDown = errors.New("permanent failure")

// config is the parsed command line.
type config struct {
	dataDir     string
	controlPath string
	bootstrapFD int
	httpsAddr   string
	sipAddr     string // SIP over UDP and TCP
	sipTLSAddr  string // SIP over TLS; "" disables it
	// provHTTPSAddr and provHTTPAddr are the phones' provisioning (HTTPS
	// with configurations, plain HTTP with the bootstrap only); "" disables.
	provHTTPSAddr, provHTTPAddr string
	// provHost is the name phones are told (in the box's certificate);
	// "" derives it from the listener or the box's names.
	provHost string
	// pnp answers SIP PnP (multicast SUBSCRIBE to 224.0.1.75 on the SIP
	// UDP port); off unless asked for, so tests on a shared host never
	// join the group on its interfaces.
	pnp    bool
	devDir string

	// Licence phone-home (firmware/license). An empty URL means none is
	// configured: the box runs in full mode and /healthz says so.
	licenseURL   string
	licenseID    string // "" means the box serial
	licenseCA    string // PEM roots for the licence server; "" = system roots
	licenseProxy string // http://[user:pass@]host:port, CONNECT only
	updateRepo   string // https://… TUF repository; "": no pulled updates
	updateRoot   string // its trusted root.json in the image
	updateCA     string // PEM CAs for the repository; "": system roots
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without os.Exit, returning the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "edgepbxd: %v\n", err)
		return exitStayDown
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err = start(ctx, cfg, log, stdout)
	switch {
	case err == nil:
		log.Info("edgepbxd: stopped")
		return 0
	case errors.Is(err, errStayDown):
		log.Error("edgepbxd: cannot start, staying down (exit 125)", "err", err)
		fmt.Fprintf(stderr, "edgepbxd: %v\n", err)
		return exitStayDown
	default:
		log.Error("edgepbxd: failed", "err", err)
		return 1
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("edgepbxd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.StringVar(&c.dataDir, "data", "/data", "data partition (holds edgepbx.db)")
	fs.StringVar(&c.controlPath, "control", "/run/edgepbx/init.sock", "PID 1 control socket (in --dev mode only used when given)")
	fs.IntVar(&c.bootstrapFD, "bootstrap-fd", 3, "inherited fd carrying the bootstrap JSON from PID 1")
	fs.StringVar(&c.httpsAddr, "https", ":443", "HTTPS listen address (--dev default 127.0.0.1:8443)")
	fs.StringVar(&c.sipAddr, "sip", ":5060", "SIP listen address for UDP and TCP (--dev default 127.0.0.1:5060)")
	fs.StringVar(&c.sipTLSAddr, "sip-tls", ":5061", "SIP over TLS listen address, \"\" to disable (--dev default 127.0.0.1:5061)")
	// Off unless asked for (PID 1 passes :8443 and :8080), so a process
	// started by hand or by a test never takes those ports by surprise.
	fs.StringVar(&c.provHTTPSAddr, "prov-https", "", "phone provisioning HTTPS listen address (PID 1 passes :8443); \"\" disables")
	fs.StringVar(&c.provHTTPAddr, "prov-http", "", "phone provisioning bootstrap, plain HTTP with no secrets (PID 1 passes :8080); \"\" disables")
	fs.BoolVar(&c.pnp, "pnp", false, "answer SIP plug-and-play (SUBSCRIBE Event: ua-profile, multicast to 224.0.1.75 and unicast to the SIP port) with the provisioning URL (PID 1 passes it)")
	fs.StringVar(&c.provHost, "prov-host", "", "the box's name or address as phones reach it (must be in its certificate); default: derived")
	fs.StringVar(&c.licenseURL, "license-url", "", "licence server `URL` (https://host[:port]); empty: no phone-home configured")
	fs.StringVar(&c.licenseID, "license-id", "", "licence id sent with each check-in (default: the box serial)")
	fs.StringVar(&c.licenseCA, "license-ca", "", "PEM `file` of CA certificates for the licence server (default: system roots)")
	fs.StringVar(&c.licenseProxy, "license-proxy", "", "HTTP proxy `URL` for the check-in (CONNECT), e.g. http://user:pass@proxy:3128")
	fs.StringVar(&c.updateRepo, "update-repo", "", "vendor update repository `URL` (https://…/, TUF metadata; reached like the check-in); empty: no pulled updates")
	fs.StringVar(&c.updateRoot, "update-root", DefaultUpdateRoot, "the repository's trusted TUF root.json `file`")
	fs.StringVar(&c.updateCA, "update-ca", "", "PEM `file` of CA certificates for the update repository (default: system roots)")
	fs.StringVar(&c.devDir, "dev", "", "development mode: identity and data in `DIR`, loopback only, no PID 1")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.devDir != "" {
		dir, err := filepath.Abs(c.devDir)
		if err != nil {
			return config{}, fmt.Errorf("--dev: %w", err)
		}
		c.devDir, c.dataDir = dir, dir
		if !set["https"] {
			c.httpsAddr = "127.0.0.1:8443"
		}
		if !set["sip"] {
			c.sipAddr = "127.0.0.1:5060"
		}
		if !set["sip-tls"] {
			c.sipTLSAddr = "127.0.0.1:5061"
		}
		if !set["control"] {
			c.controlPath = ""
		}
		for _, a := range []string{c.httpsAddr, c.sipAddr, c.sipTLSAddr, c.provHTTPSAddr, c.provHTTPAddr} {
			if a == "" {
				continue
			}
			if err := loopbackOnly(a); err != nil {
				return config{}, fmt.Errorf("--dev: %w", err)
			}
		}
	}
	for name, a := range map[string]string{"https": c.httpsAddr, "sip": c.sipAddr, "sip-tls": c.sipTLSAddr, "prov-https": c.provHTTPSAddr, "prov-http": c.provHTTPAddr} {
		if a == "" && (name == "sip-tls" || name == "prov-https" || name == "prov-http") {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return config{}, fmt.Errorf("--%s %q: %w", name, a, err)
		}
	}
	if err := c.validateLicense(); err != nil {
		return config{}, err
	}
	return c, nil
}

// validateLicense checks the licence flags' form; the licence package
// checks the rest when the manager is built.
func (c config) validateLicense() error {
	if c.licenseURL == "" {
		if c.licenseID != "" || c.licenseCA != "" || c.licenseProxy != "" {
			return errors.New("--license-id, --license-ca and --license-proxy need --license-url")
		}
		return nil
	}
	u, err := url.Parse(c.licenseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("--license-url %q: want https://host[:port]", c.licenseURL)
	}
	if c.licenseProxy != "" {
		p, err := url.Parse(c.licenseProxy)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			// The URL may carry credentials: never echo it.
			return errors.New("--license-proxy: want http://[user:pass@]host:port")
		}
	}
	return nil
}

// loopbackOnly keeps a development instance (its device key sits in a plain
// file) off the network.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address", addr)
}
