// Command edgepbx is the host tool for installers, developers and CI: it
// builds appliance images and runs them under QEMU.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	// The context ends on the first ^C: builds stop; `run` turns it into a
	// clean poweroff instead (see run.go).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgepbx:", err)
		os.Exit(1)
	}
}

type globalFlags struct {
	verbose bool
}

func newRoot() *cobra.Command {
	var g globalFlags
	root := &cobra.Command{
		Use:           "edgepbx",
		Short:         "Build and run edgepbx appliance images",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log build and QEMU details")
	root.AddCommand(newBuildCmd(&g), newRunCmd(&g), newBackupCmd(), newKeysCmd(), newSignCmd(), newUpdateCmd(), newRepoCmd(), newFlashCmd())
	return root
}

func (g *globalFlags) logger() *slog.Logger {
	level := slog.LevelInfo
	if g.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// repoRoot finds the source tree the image is built from: the directory of
// the go.mod above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/edgepbx/edgepbx\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("not inside the edgepbx source tree (no go.mod above %s)", dir)
		}
	}
}

// version names the build: git describe of the source tree, or "dev".
func version(ctx context.Context, repo string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", repo, "describe", "--always", "--dirty", "--tags").Output()
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(out))
}

// cacheDir is where downloaded kernel packages are kept between builds.
func cacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory: %w", err)
	}
	return filepath.Join(d, "edgepbx"), nil
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
