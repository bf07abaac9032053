// Command edgepbxd is the appliance's services daemon. PID 1 starts it as an
// unprivileged uid with the device secrets on fd 3; it owns the store, the
// certificates and every network service (HTTPS now; SIP, admin and licence
// plug in through daemon.routes and daemon.services).
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
	sipAddr     string // the SIP service (firmware/sip) listens here once it is built in
	devDir      string
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
	fs.StringVar(&c.sipAddr, "sip", ":5060", "SIP listen address (--dev default 127.0.0.1:5060)")
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
		if !set["control"] {
			c.controlPath = ""
		}
		for _, a := range []string{c.httpsAddr, c.sipAddr} {
			if err := loopbackOnly(a); err != nil {
				return config{}, fmt.Errorf("--dev: %w", err)
			}
		}
	}
	for name, a := range map[string]string{"https": c.httpsAddr, "sip": c.sipAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return config{}, fmt.Errorf("--%s %q: %w", name, a, err)
		}
	}
	return c, nil
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
