package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/image"
	"golang.org/x/sys/unix"
)

// Flash refusals.
var (
	ErrTargetMounted = errors.New("target or one of its partitions is mounted or in use as swap")
	ErrTargetSystem  = errors.New("target holds the running system's root file system")
	ErrTargetLarge   = errors.New("target is larger than --max-size (a data disk?); pass --max-size to allow it")
	ErrTargetSmall   = errors.New("target is smaller than the image")
	ErrVerify        = errors.New("read-back differs from the image")
)

// flashHost is where flash looks at the host; tests point it elsewhere.
type flashHost struct {
	mountinfo string // /proc/self/mountinfo
	swaps     string // /proc/swaps
	sys       string // /sys
}

var realHost = flashHost{mountinfo: "/proc/self/mountinfo", swaps: "/proc/swaps", sys: "/sys"}

func newFlashCmd() *cobra.Command {
	var maxSize int64
	var boardName, device, out string
	cmd := &cobra.Command{
		Use:   "flash [IMAGE DEVICE] | --board B --device DEVICE",
		Short: "write a disk image (out/BOARD/disk.img) to a disk or a file, then read it back to verify",
		Long: "Writes the disk image to DEVICE (a whole disk, or a plain file), syncs and reads it back.\n" +
			"Refuses a disk that is mounted (or has a mounted partition), is swap, holds the host's /, is\n" +
			"smaller than the image, or is larger than --max-size GiB (a data disk by mistake).",
		Args: cobra.RangeArgs(0, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			img, target, err := flashArgs(args, boardName, device, out)
			if err != nil {
				return err
			}
			n, sum, err := flash(realHost, img, target, maxSize<<30)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "flashed %s to %s: %d bytes, sha256 %x, verified\n", img, target, n, sum)
			return nil
		},
	}
	cmd.Flags().Int64Var(&maxSize, "max-size", 256, "refuse block devices larger than this many GiB")
	cmd.Flags().StringVar(&boardName, "board", "", "flash out/BOARD/disk.img (built with `edgepbx build --board BOARD --disk`)")
	cmd.Flags().StringVar(&device, "device", "", "target disk or file (with --board)")
	cmd.Flags().StringVar(&out, "out", "out", "build output directory (with --board)")
	return cmd
}

// flashArgs takes IMAGE DEVICE, or --board and --device.
func flashArgs(args []string, boardName, device, out string) (img, target string, err error) {
	switch {
	case len(args) == 2 && boardName == "" && device == "":
		return args[0], args[1], nil
	case len(args) == 0 && boardName != "" && device != "":
		if _, err := board.Load(boardName); err != nil {
			return "", "", err
		}
		return filepath.Join(out, boardName, image.DiskName), device, nil
	}
	return "", "", errors.New("flash: give IMAGE DEVICE, or --board B --device DEVICE")
}

// flash writes img to target (a block device or a plain file), syncs,
// and reads it back. A block device must not be mounted, swap, or hold
// the host's root, and is opened O_EXCL (the kernel refuses it while
// anything holds it).
func flash(h flashHost, img, target string, maxBytes int64) (int64, [32]byte, error) {
	var sum [32]byte
	in, err := os.Open(img)
	if err != nil {
		return 0, sum, fmt.Errorf("flash: %w", err)
	}
	defer in.Close()
	ist, err := in.Stat()
	if err != nil {
		return 0, sum, fmt.Errorf("flash: %w", err)
	}
	size := ist.Size()
	flags := os.O_WRONLY
	st, err := os.Stat(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
		flags |= os.O_CREATE | os.O_EXCL
	case err != nil:
		return 0, sum, fmt.Errorf("flash: %w", err)
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		if err := checkDevice(h, target, st, size, maxBytes); err != nil {
			return 0, sum, fmt.Errorf("flash %s: %w", target, err)
		}
		flags |= unix.O_EXCL
	case st.Mode().IsRegular():
		if os.SameFile(st, ist) {
			return 0, sum, fmt.Errorf("flash: %s is the image itself", target)
		}
		flags |= os.O_TRUNC
	default:
		return 0, sum, fmt.Errorf("flash: %s is neither a block device nor a file", target)
	}
	out, err := os.OpenFile(target, flags, 0o644)
	if err != nil {
		return 0, sum, fmt.Errorf("flash %s: %w", target, err)
	}
	h1 := sha256.New()
	n, err := io.Copy(out, io.TeeReader(in, h1))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, sum, fmt.Errorf("flash %s: write: %w", target, err)
	}
	copy(sum[:], h1.Sum(nil))
	// Read back what the device holds (not the page cache: the device
	// was synced; a lying device shows here or on first boot).
	back, err := os.Open(target)
	if err != nil {
		return n, sum, fmt.Errorf("flash %s: verify: %w", target, err)
	}
	defer back.Close()
	if st != nil && st.Mode()&os.ModeDevice != 0 {
		unix.Fadvise(int(back.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
	h2 := sha256.New()
	if _, err := io.Copy(h2, io.LimitReader(back, n)); err != nil {
		return n, sum, fmt.Errorf("flash %s: verify: %w", target, err)
	}
	if !bytes.Equal(h2.Sum(nil), sum[:]) {
		return n, sum, fmt.Errorf("flash %s: %w", target, ErrVerify)
	}
	return n, sum, nil
}

// checkDevice refuses a block device that is in use, holds the host's
// root, is smaller than the image or larger than the limit.
func checkDevice(h flashHost, target string, st os.FileInfo, imgSize, maxBytes int64) error {
	rdev := st.Sys().(*syscall.Stat_t).Rdev
	major, minor := unix.Major(uint64(rdev)), unix.Minor(uint64(rdev))
	// The whole disk and its partitions, as major:minor.
	node := filepath.Join(h.sys, "dev/block", fmt.Sprintf("%d:%d", major, minor))
	real, err := filepath.EvalSymlinks(node)
	if err != nil {
		return fmt.Errorf("sysfs: %w", err)
	}
	if _, err := os.Stat(filepath.Join(real, "partition")); err == nil {
		real = filepath.Dir(real) // a partition was named: judge its disk
	}
	devs := map[string]bool{readDev(real): true}
	ents, _ := os.ReadDir(real)
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(real, e.Name(), "partition")); err == nil {
			devs[readDev(filepath.Join(real, e.Name()))] = true
		}
	}
	mounted, root, err := mountedDevs(h.mountinfo)
	if err != nil {
		return err
	}
	for d := range devs {
		if d != "" && d == root {
			return ErrTargetSystem
		}
		if d != "" && mounted[d] {
			return ErrTargetMounted
		}
	}
	if swaps, err := os.ReadFile(h.swaps); err == nil {
		for _, l := range strings.Split(string(swaps), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) > 0 && strings.HasPrefix(f[0], "/dev/") {
				if s, err := os.Stat(f[0]); err == nil && s.Mode()&os.ModeDevice != 0 {
					r := s.Sys().(*syscall.Stat_t).Rdev
					if devs[fmt.Sprintf("%d:%d", unix.Major(uint64(r)), unix.Minor(uint64(r)))] {
						return ErrTargetMounted
					}
				}
			}
		}
	}
	sectors, err := os.ReadFile(filepath.Join(node, "size"))
	if err != nil {
		return fmt.Errorf("sysfs: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(sectors)), 10, 64)
	if err != nil {
		return fmt.Errorf("sysfs size: %w", err)
	}
	size := n * 512
	switch {
	case size < imgSize:
		return fmt.Errorf("%w (%d < %d bytes)", ErrTargetSmall, size, imgSize)
	case maxBytes > 0 && size > maxBytes:
		return fmt.Errorf("%w (%d GiB)", ErrTargetLarge, size>>30)
	}
	return nil
}

func readDev(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "dev"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// mountedDevs reads mountinfo: the major:minor of every mounted file
// system, and that of "/".
func mountedDevs(path string) (map[string]bool, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	m, root := map[string]bool{}, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint ...
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		m[fs[2]] = true
		if fs[4] == "/" {
			root = fs[2]
		}
	}
	return m, root, sc.Err()
}
