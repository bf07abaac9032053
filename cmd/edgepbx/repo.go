package main

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/spf13/cobra"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/edgepbx/edgepbx/firmware/update"
	"github.com/edgepbx/edgepbx/init/bundle"
)

// The vendor's update repository is plain files any HTTPS server or CDN
// serves (layout in firmware/update). `edgepbx repo` keeps its TUF
// metadata: init makes the four role keys and version 1 of everything,
// add publishes a bundle, timestamp re-signs the timestamp (run it daily:
// a box refuses an expired one as a frozen repository).

const (
	rootTTL      = 365 * 24 * time.Hour
	targetsTTL   = 90 * 24 * time.Hour
	timestampTTL = 48 * time.Hour
)

var tufRoles = []string{"root", "targets", "snapshot", "timestamp"}

type tufKeyFile struct {
	Role string `json:"role"`
	Seed []byte `json:"seed"`
}

// tufSigner reads (or, with create, makes) KEYDIR/tuf-ROLE.key, mode 0600.
func tufSigner(dir, role string, create bool) (signature.Signer, ed25519.PublicKey, error) {
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, err
		}
	}
	return tufSignerAt(filepath.Join(dir, "tuf-"+role+".key"), role, create)
}

// tufSignerAt is tufSigner for the key file at p.
func tufSignerAt(p, role string, create bool) (signature.Signer, ed25519.PublicKey, error) {
	var kf tufKeyFile
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		st, serr := os.Stat(p)
		if serr != nil || st.Mode().Perm()&0o077 != 0 {
			return nil, nil, fmt.Errorf("%s: %w", p, bundle.ErrKeyMode)
		}
		if err := json.Unmarshal(b, &kf); err != nil || kf.Role != role || len(kf.Seed) != ed25519.SeedSize {
			return nil, nil, fmt.Errorf("%s: not a %s key", p, role)
		}
	case errors.Is(err, fs.ErrNotExist) && create:
		kf = tufKeyFile{Role: role, Seed: make([]byte, ed25519.SeedSize)}
		if _, err := rand.Read(kf.Seed); err != nil {
			return nil, nil, err
		}
		raw, _ := json.Marshal(kf)
		if err := os.WriteFile(p, raw, 0o600); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, err
	}
	priv := ed25519.NewKeyFromSeed(kf.Seed)
	s, err := signature.LoadSigner(priv, crypto.Hash(0))
	return s, priv.Public().(ed25519.PublicKey), err
}

type tufMeta interface {
	ClearSignatures()
	Sign(signature.Signer) (*metadata.Signature, error)
	ToBytes(bool) ([]byte, error)
}

func signWrite(dir, keys, role, name string, m tufMeta) error {
	s, _, err := tufSigner(keys, role, false)
	if err != nil {
		return err
	}
	m.ClearSignatures()
	if _, err := m.Sign(s); err != nil {
		return fmt.Errorf("sign %s: %w", name, err)
	}
	b, err := m.ToBytes(true)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, name), bytes.NewReader(b))
}

func newRepoCmd() *cobra.Command {
	var dir, keys string
	cmd := &cobra.Command{Use: "repo", Short: "Keep the vendor's update repository (TUF metadata over plain files)"}
	pf := cmd.PersistentFlags()
	pf.StringVar(&dir, "dir", "repo", "the repository's files (serve this directory over HTTPS)")
	pf.StringVar(&keys, "keys", "keys", "directory of the repository's role keys (vendor machine only)")
	initC := &cobra.Command{Use: "init", Short: "Make the role keys and an empty repository; 1.root.json is what images carry (--update-root)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := os.Stat(filepath.Join(dir, "1.root.json")); err == nil {
				return fmt.Errorf("%s already holds a repository", dir)
			}
			if err := os.MkdirAll(filepath.Join(dir, "targets"), 0o755); err != nil {
				return err
			}
			now := time.Now().UTC()
			root := metadata.Root(now.Add(rootTTL))
			root.Signed.ConsistentSnapshot = false
			for _, role := range tufRoles {
				_, pub, err := tufSigner(keys, role, true)
				if err != nil {
					return err
				}
				k, err := metadata.KeyFromPublicKey(pub)
				if err != nil {
					return err
				}
				if err := root.Signed.AddKey(k, role); err != nil {
					return err
				}
			}
			if err := signWrite(dir, keys, "root", "1.root.json", root); err != nil {
				return err
			}
			if err := publish(dir, keys, metadata.Targets(now.Add(targetsTTL)), metadata.Snapshot(now), metadata.Timestamp(now)); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), filepath.Join(dir, "1.root.json"))
			return nil
		}}
	add := &cobra.Command{Use: "add BUNDLE", Short: "Publish a signed bundle (board, version and security flag from its manifest)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, tf, err := bundleTarget(args[0])
			if err != nil {
				return err
			}
			t, s, ts, err := loadRepo(dir)
			if err != nil {
				return err
			}
			dst := filepath.Join(dir, "targets", filepath.FromSlash(o.Path))
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			src, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			if err := writeFileAtomic(dst, src); err != nil {
				return err
			}
			t.Signed.Targets[o.Path] = tf
			t.Signed.Version++
			t.Signed.Expires = time.Now().UTC().Add(targetsTTL)
			if err := publish(dir, keys, t, s, ts); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s (%d)\tsecurity=%v\n", o.Path, o.Version, o.Number, o.Security)
			return nil
		}}
	stamp := &cobra.Command{Use: "timestamp", Short: "Re-sign the timestamp (daily; boxes refuse an expired one)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ts, err := new(metadata.Metadata[metadata.TimestampType]).FromFile(filepath.Join(dir, "timestamp.json"))
			if err != nil {
				return err
			}
			ts.Signed.Version++
			ts.Signed.Expires = time.Now().UTC().Add(timestampTTL)
			return signWrite(dir, keys, "timestamp", "timestamp.json", ts)
		}}
	rotate := &cobra.Command{Use: "rotate ROLE", Short: "Replace a role's key (root, targets, snapshot or timestamp): the next N.root.json names the new key (signed by the old and new root keys) and everything is re-signed; boxes follow at their next check", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := rotateRole(dir, keys, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n", filepath.Join(dir, fmt.Sprintf("%d.root.json", n)))
			return nil
		}}
	cmd.AddCommand(initC, add, stamp, rotate)
	return cmd
}

// maxRoots bounds the walk over N.root.json.
const maxRoots = 1024

// latestRoot is the repository's newest root and its version.
func latestRoot(dir string) (int, *metadata.Metadata[metadata.RootType], error) {
	n := 0
	for i := 1; i <= maxRoots; i++ {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%d.root.json", i))); err != nil {
			break
		}
		n = i
	}
	if n == 0 {
		return 0, nil, fmt.Errorf("%s holds no 1.root.json: run `edgepbx repo init` first", dir)
	}
	r, err := new(metadata.Metadata[metadata.RootType]).FromFile(filepath.Join(dir, fmt.Sprintf("%d.root.json", n)))
	if err != nil {
		return 0, nil, err
	}
	if int(r.Signed.Version) != n {
		return 0, nil, fmt.Errorf("%d.root.json says version %d", n, r.Signed.Version)
	}
	return n, r, nil
}

// rotateRole replaces role's key. The new key is made beside the old one
// first; the next root names it (signed by the new root key and, for the
// root role, the old one too, so boxes trusting the old root accept it);
// then the old key file is kept as tuf-ROLE.key.vN (retired, never used
// again) and every top-level role is re-signed with the keys now in force.
func rotateRole(dir, keys, role string) (int, error) {
	known := false
	for _, r := range tufRoles {
		known = known || r == role
	}
	if !known {
		return 0, fmt.Errorf("role %q: want one of root, targets, snapshot, timestamp", role)
	}
	n, root, err := latestRoot(dir)
	if err != nil {
		return 0, err
	}
	oldRoot, _, err := tufSigner(keys, "root", false)
	if err != nil {
		return 0, err
	}
	cur := filepath.Join(keys, "tuf-"+role+".key")
	retired := fmt.Sprintf("%s.v%d", cur, n)
	if _, err := os.Stat(retired); err == nil {
		return 0, fmt.Errorf("%s already exists: a rotation of root version %d was started; finish or remove it by hand", retired, n)
	}
	staged := filepath.Join(keys, "tuf-"+role+".key.new")
	os.Remove(staged) // a rotation that stopped before the new root was written
	newSigner, newPub, err := tufSignerAt(staged, role, true)
	if err != nil {
		return 0, err
	}
	k, err := metadata.KeyFromPublicKey(newPub)
	if err != nil {
		return 0, err
	}
	for _, id := range append([]string(nil), root.Signed.Roles[role].KeyIDs...) {
		if err := root.Signed.RevokeKey(id, role); err != nil {
			return 0, err
		}
	}
	if err := root.Signed.AddKey(k, role); err != nil {
		return 0, err
	}
	root.Signed.Version = int64(n + 1)
	root.Signed.Expires = time.Now().UTC().Add(rootTTL)
	root.ClearSignatures()
	signers := []signature.Signer{oldRoot}
	if role == "root" {
		signers = append(signers, newSigner)
	}
	for _, s := range signers {
		if _, err := root.Sign(s); err != nil {
			return 0, fmt.Errorf("sign %d.root.json: %w", n+1, err)
		}
	}
	b, err := root.ToBytes(true)
	if err != nil {
		return 0, err
	}
	if err := os.Rename(cur, retired); err != nil {
		return 0, err
	}
	if err := os.Rename(staged, cur); err != nil {
		return 0, err
	}
	if err := writeFileAtomic(filepath.Join(dir, fmt.Sprintf("%d.root.json", n+1)), bytes.NewReader(b)); err != nil {
		// The old root stays in force: so does the old key.
		os.Rename(cur, staged)
		os.Rename(retired, cur)
		return 0, err
	}
	t, s, ts, err := loadRepo(dir)
	if err != nil {
		return 0, err
	}
	t.Signed.Version++
	t.Signed.Expires = time.Now().UTC().Add(targetsTTL)
	return n + 1, publish(dir, keys, t, s, ts)
}

func loadRepo(dir string) (*metadata.Metadata[metadata.TargetsType], *metadata.Metadata[metadata.SnapshotType], *metadata.Metadata[metadata.TimestampType], error) {
	t, err := new(metadata.Metadata[metadata.TargetsType]).FromFile(filepath.Join(dir, "targets.json"))
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := new(metadata.Metadata[metadata.SnapshotType]).FromFile(filepath.Join(dir, "snapshot.json"))
	if err != nil {
		return nil, nil, nil, err
	}
	ts, err := new(metadata.Metadata[metadata.TimestampType]).FromFile(filepath.Join(dir, "timestamp.json"))
	return t, s, ts, err
}

// publish signs targets, then a new snapshot naming it, then a new
// timestamp naming that: the order a box reads them in reverse.
func publish(dir, keys string, t *metadata.Metadata[metadata.TargetsType], s *metadata.Metadata[metadata.SnapshotType],
	ts *metadata.Metadata[metadata.TimestampType]) error {
	now := time.Now().UTC()
	if err := signWrite(dir, keys, "targets", "targets.json", t); err != nil {
		return err
	}
	s.Signed.Meta["targets.json"] = metadata.MetaFile(t.Signed.Version)
	s.Signed.Version++
	s.Signed.Expires = now.Add(targetsTTL)
	if err := signWrite(dir, keys, "snapshot", "snapshot.json", s); err != nil {
		return err
	}
	ts.Signed.Meta["snapshot.json"] = metadata.MetaFile(s.Signed.Version)
	ts.Signed.Version++
	ts.Signed.Expires = now.Add(timestampTTL)
	return signWrite(dir, keys, "timestamp", "timestamp.json", ts)
}

// bundleTarget describes a bundle file as a TUF target, hashing it as a
// stream.
func bundleTarget(path string) (update.Offer, *metadata.TargetFiles, error) {
	f, err := os.Open(path)
	if err != nil {
		return update.Offer{}, nil, err
	}
	defer f.Close()
	h, err := bundle.ReadHeader(f)
	if err != nil {
		return update.Offer{}, nil, err
	}
	m := h.Manifest
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return update.Offer{}, nil, err
	}
	sum := sha256.New()
	n, err := io.Copy(sum, f)
	if err != nil {
		return update.Offer{}, nil, err
	}
	o := update.Offer{Path: m.Board + "/edgepbx-" + m.Version + ".bundle", Board: m.Board, Version: m.Version,
		Number: m.VersionNumber, Security: m.Security, Length: n}
	c := update.MarshalOffer(o)
	return o, &metadata.TargetFiles{Length: n, Hashes: metadata.Hashes{"sha256": sum.Sum(nil)}, Custom: &c, Path: o.Path}, nil
}
