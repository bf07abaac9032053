package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/init/bundle"
)

// The vendor's signing keys live in a directory on the vendor's machine
// (KEYDIR/<id>.key, mode 0600); their public halves go into a keyring file
// that the image builder puts at bundle.KeyringPath. Rotation is two
// releases long: `keys rotate` adds the new key to the keyring (the next
// image, still signed with the old key, trusts both), and a later
// `keys retire` drops the old key once every box runs an image that
// trusts the new one.

func newKeysCmd() *cobra.Command {
	var dir, keyring, role string
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create, rotate, retire and list the update signing keys",
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&dir, "dir", "keys", "directory of the private keys (vendor machine only; files of mode 0600)")
	pf.StringVar(&keyring, "keyring", "update-keys.json", "the public keyring the image carries")
	create := &cobra.Command{Use: "create", Short: "Make a new signing key and add its public half to the keyring", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, p, err := addKey(dir, keyring, role, "")
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", k.ID, k.Role, p)
			return nil
		}}
	create.Flags().StringVar(&role, "role", bundle.RoleRelease, "release, or emergency (may sign an audited downgrade below a box's floor)")
	rotate := &cobra.Command{Use: "rotate OLD-ID", Short: "Make a successor of key OLD-ID (same role) and add it to the keyring next to the old one",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, p, err := addKey(dir, keyring, "", args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", k.ID, k.Role, p)
			fmt.Fprintf(cmd.ErrOrStderr(), "keyring %s now trusts %s and %s: ship an image with it (signed with %s), then `edgepbx keys retire %s`\n",
				keyring, args[0], k.ID, args[0], args[0])
			return nil
		}}
	retire := &cobra.Command{Use: "retire ID", Short: "Drop a key from the keyring (images built from it no longer trust the key)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := readKeyring(keyring)
			if err != nil {
				return err
			}
			i := slices.IndexFunc(keys, func(k bundle.KeyringKey) bool { return k.ID == args[0] })
			if i < 0 {
				return fmt.Errorf("key %s is not in %s", args[0], keyring)
			}
			rest := slices.Delete(keys, i, i+1)
			if !slices.ContainsFunc(rest, func(k bundle.KeyringKey) bool { return k.Role == bundle.RoleRelease }) {
				return fmt.Errorf("retiring %s would leave %s without a release key: rotate first", args[0], keyring)
			}
			return writeKeyring(keyring, rest)
		}}
	list := &cobra.Command{Use: "list", Short: "List the keyring", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := readKeyring(keyring)
			if err != nil {
				return err
			}
			for _, k := range keys {
				_, err := os.Stat(filepath.Join(dir, k.ID+".key"))
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\tprivate key here: %v\n", k.ID, k.Role, err == nil)
			}
			return nil
		}}
	cmd.AddCommand(create, rotate, retire, list)
	return cmd
}

// addKey makes a key of role (or of old's role when rotating old) and adds
// it to the keyring, creating the keyring if there is none.
func addKey(dir, keyring, role, old string) (bundle.PrivateKey, string, error) {
	keys, err := readKeyring(keyring)
	if errors.Is(err, fs.ErrNotExist) && old == "" {
		keys, err = nil, nil
	}
	if err != nil {
		return bundle.PrivateKey{}, "", err
	}
	if old != "" {
		i := slices.IndexFunc(keys, func(k bundle.KeyringKey) bool { return k.ID == old })
		if i < 0 {
			return bundle.PrivateKey{}, "", fmt.Errorf("key %s is not in %s", old, keyring)
		}
		role = keys[i].Role
	}
	k, err := bundle.GenerateKey(role)
	if err != nil {
		return k, "", err
	}
	if err := writeKeyring(keyring, append(keys, k.Public())); err != nil {
		return k, "", err
	}
	p, err := bundle.WritePrivateKey(dir, k)
	return k, p, err
}

func readKeyring(path string) ([]bundle.KeyringKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if _, err := bundle.ParseKeyring(b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var f bundle.KeyringFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	return f.Keys, nil
}

func writeKeyring(path string, keys []bundle.KeyringKey) error {
	b, err := bundle.MarshalKeyring(keys)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, bytes.NewReader(b))
}

func newSignCmd() *cobra.Command {
	var keyFile, board, version, out string
	var number, floor uint64
	var security, downgrade bool
	cmd := &cobra.Command{
		Use:   "sign --key KEYFILE --board B --version V --version-number N SLOT-IMAGE",
		Short: "Make a signed update bundle of a slot image (out/BOARD/slot.img)",
		Long: `Writes manifest + Ed25519 signature + image. The image is read twice (hash, then copy),
never held in memory. --floor is the anti-rollback floor a box takes on after committing this
bundle (default: the version number). --downgrade marks a bundle a box installs below its floor:
only an emergency key may sign one, and the box audits it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := bundle.ReadPrivateKey(keyFile)
			if err != nil {
				return err
			}
			if downgrade && k.Role != bundle.RoleEmergency {
				return fmt.Errorf("--downgrade needs an emergency key; %s is a %s key", k.ID, k.Role)
			}
			if !cmd.Flags().Changed("floor") {
				floor = number
			}
			if out == "" {
				out = args[0] + ".bundle"
			}
			m, err := signBundle(args[0], out, k, bundle.Manifest{Format: bundle.Format, Board: board, Version: version,
				VersionNumber: number, Floor: floor, Security: security, Downgrade: downgrade, Created: time.Now().UTC().Truncate(time.Second)})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s %s (%d)\t%d bytes\tkey %s\n", out, m.Board, m.Version, m.VersionNumber, m.ImageSize, m.KeyID)
			return nil
		}}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "private key file (keys/<id>.key)")
	f.StringVar(&board, "board", "", "board the image is for")
	f.StringVar(&version, "version", "", "version name shown to admins")
	f.Uint64Var(&number, "version-number", 0, "monotonic version number (anti-rollback)")
	f.Uint64Var(&floor, "floor", 0, "floor after commit (default: --version-number)")
	f.BoolVar(&security, "security", false, "a security fix (installed under the security-only policy)")
	f.BoolVar(&downgrade, "downgrade", false, "allowed below a box's floor (emergency key only; audited)")
	f.StringVarP(&out, "output", "o", "", "bundle file (default: SLOT-IMAGE.bundle)")
	for _, n := range []string{"key", "board", "version", "version-number"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

// signBundle writes a bundle of the image at src to dst (atomically).
func signBundle(src, dst string, k bundle.PrivateKey, m bundle.Manifest) (bundle.Manifest, error) {
	img, err := os.Open(src)
	if err != nil {
		return m, err
	}
	defer img.Close()
	m.ImageSHA256, m.ImageSHA512, m.ImageSize, err = bundle.HashImage(img)
	if err != nil {
		return m, fmt.Errorf("hash %s: %w", src, err)
	}
	m.KeyID = k.ID
	if err := m.Validate(); err != nil {
		return m, err
	}
	if _, err := img.Seek(0, io.SeekStart); err != nil {
		return m, err
	}
	pr, pw := io.Pipe()
	go func() {
		err := bundle.WriteHeader(pw, m, k)
		if err == nil {
			// Exactly the hashed length: a file that grew since is cut, one
			// that shrank fails here rather than on the box.
			var n int64
			n, err = io.Copy(pw, io.LimitReader(img, m.ImageSize))
			if err == nil && n != m.ImageSize {
				err = fmt.Errorf("%s changed while signing", src)
			}
		}
		pw.CloseWithError(err)
	}()
	if err := writeFileAtomic(dst, pr); err != nil {
		pr.CloseWithError(err)
		return m, err
	}
	// Re-hash what was written: an image changed between the two reads
	// gives a bundle no box would take; say so here.
	f, err := os.Open(dst)
	if err != nil {
		return m, err
	}
	defer f.Close()
	h, err := bundle.ReadHeader(f)
	if err != nil {
		return m, err
	}
	if _, err := io.Copy(io.Discard, bundle.NewImageReader(f, h.Manifest)); err != nil {
		os.Remove(dst)
		return m, fmt.Errorf("%s changed while signing: %w", src, err)
	}
	return m, nil
}

// updateFlags make `edgepbx build` produce an updatable image.
type updateFlags struct {
	keyring, repo, root, ca string
	number, floor           uint64
}

func (u *updateFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&u.keyring, "update-keys", "", "keyring of the update signing keys (`edgepbx keys`); makes the image updatable")
	f.Uint64Var(&u.number, "version-number", 0, "the image's monotonic version number (with --update-keys)")
	f.Uint64Var(&u.floor, "floor", 0, "anti-rollback floor the image enforces (0: --version-number)")
	f.StringVar(&u.repo, "update-repo", "", "vendor update repository URL (https://…/, TUF metadata) the box pulls from")
	f.StringVar(&u.root, "update-root", "", "the repository's trusted root.json (with --update-repo)")
	f.StringVar(&u.ca, "update-ca", "", "PEM CA of the repository's HTTPS certificate when it is not under a public CA (with --update-repo)")
}

func (u *updateFlags) options() ([]image.Option, error) {
	if u.keyring == "" {
		if u.number != 0 || u.repo != "" || u.root != "" || u.ca != "" {
			return nil, errors.New("--version-number, --update-repo, --update-root and --update-ca need --update-keys")
		}
		return nil, nil
	}
	kr, err := os.ReadFile(u.keyring)
	if err != nil {
		return nil, err
	}
	t := image.UpdateTrust{VersionNumber: u.number, Floor: u.floor, Keyring: kr, RepoURL: u.repo}
	if t.Floor == 0 {
		t.Floor = u.number
	}
	if u.root != "" {
		if t.TUFRoot, err = os.ReadFile(u.root); err != nil {
			return nil, err
		}
	}
	if u.ca != "" {
		if t.RepoCA, err = os.ReadFile(u.ca); err != nil {
			return nil, err
		}
	}
	return []image.Option{image.WithUpdateTrust(t)}, nil
}
