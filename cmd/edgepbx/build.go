package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/image"
)

type buildFlags struct {
	board   string
	out     string
	tags    []string
	version string
	upd     updateFlags
	disk    bool
	console string
}

func (f *buildFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.board, "board", "", "board profile ("+boardNames()+")")
	cmd.Flags().StringVar(&f.out, "out", "out", "output directory")
	cmd.Flags().StringSliceVar(&f.tags, "tags", nil, "extra Go build tags for the image's programs (e.g. testhook)")
	cmd.Flags().StringVar(&f.version, "version", "", "version string baked into the image (default: git describe)")
	cmd.Flags().BoolVar(&f.disk, "disk", false, "also write a UEFI disk image (disk.img: GPT, slots A/B, data) and the slot image (slot.img)")
	cmd.Flags().StringVar(&f.console, "console", "", "kernel console instead of the board's (e.g. ttyS0 for a serial console)")
	cmd.MarkFlagRequired("board")
	f.upd.register(cmd)
}

func boardNames() string {
	names := board.Names()
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}

func newBuildCmd(g *globalFlags) *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:   "build --board B",
		Short: "Build the kernel and initramfs for a board",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			img, err := buildImage(cmd.Context(), g, f)
			if err != nil {
				return err
			}
			printImage(cmd.OutOrStdout(), img)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

// buildImage runs image.Build for the flags; the output goes to OUT/BOARD.
func buildImage(ctx context.Context, g *globalFlags, f buildFlags) (*image.Image, error) {
	prof, err := board.Load(f.board)
	if err != nil {
		return nil, err
	}
	repo, err := repoRoot()
	if err != nil {
		return nil, err
	}
	cache, err := cacheDir()
	if err != nil {
		return nil, err
	}
	v := f.version
	if v == "" {
		v = version(ctx, repo)
	}
	out, err := filepath.Abs(filepath.Join(f.out, prof.Name))
	if err != nil {
		return nil, err
	}
	opts := []image.Option{
		image.WithCacheDir(cache),
		image.WithOutDir(out),
		image.WithVersion(v),
		image.WithRepoDir(repo),
		image.WithLogger(g.logger()),
	}
	if len(f.tags) > 0 {
		opts = append(opts, image.WithBuildTags(f.tags...))
	}
	uo, err := f.upd.options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, uo...)
	if f.disk {
		opts = append(opts, image.WithDisk())
	}
	if f.console != "" {
		opts = append(opts, image.WithConsole(f.console))
	}
	img, err := image.Build(ctx, prof, opts...)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", prof.Name, err)
	}
	return img, nil
}

func printImage(w io.Writer, img *image.Image) {
	fmt.Fprintf(w, "board:     %s (kernel %s)\n", img.Board.Name, img.KernelRelease)
	for _, f := range []struct{ name, path string }{{"kernel", img.Kernel}, {"initramfs", img.Initramfs}} {
		size := "?"
		if fi, err := os.Stat(f.path); err == nil {
			size = humanSize(fi.Size())
		}
		fmt.Fprintf(w, "%-10s %s (%s)\n", f.name+":", f.path, size)
	}
	fmt.Fprintf(w, "cmdline:   %s\n", img.Cmdline)
	if d := img.Disk; d != nil {
		fmt.Fprintf(w, "slot:      %s (%s, UKI %s, sha256 %s)\n", d.Slot, humanSize(d.SlotSize), humanSize(d.UKISize), d.SlotSHA256)
		fmt.Fprintf(w, "disk:      %s (%s)\n", d.Path, humanSize(d.Size))
	}
}
