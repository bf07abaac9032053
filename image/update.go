package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/update"
)

// UpdateRootPath is where the image carries the update repository's
// trusted TUF root (edgepbxd's --update-root default).
const UpdateRootPath = "etc/edgepbx/update-root.json"

// UpdateTrust is what an image needs to take updates: its monotonic
// version number and anti-rollback floor (PID 1 refuses bundles below the
// floor), the public keys bundles must be signed with (`edgepbx keys`),
// and optionally the vendor's update repository and its TUF root.
type UpdateTrust struct {
	VersionNumber uint64
	Floor         uint64 // 0: VersionNumber
	Keyring       []byte // update-keys.json
	RepoURL       string // https://…/ ; "" no pulled updates
	TUFRoot       []byte // the repository's root.json (with RepoURL)
	// RepoCA is the PEM CA the repository's certificate chains to, for a
	// repository not under a public CA; nil: the image's system roots.
	RepoCA []byte
}

// WithUpdateTrust makes the image updatable: it stages the release file,
// the keyring and the repository's root (see UpdateTrust).
func WithUpdateTrust(u UpdateTrust) Option {
	return func(o *options) error {
		if u.Floor == 0 {
			u.Floor = u.VersionNumber // an image accepts nothing older than itself unless told
		}
		if u.VersionNumber == 0 || u.Floor > u.VersionNumber {
			return fmt.Errorf("image: version number %d and floor %d: want 0 < floor <= version number", u.VersionNumber, u.Floor)
		}
		if _, err := bundle.ParseKeyring(u.Keyring); err != nil {
			return fmt.Errorf("image: update keys: %w", err)
		}
		if (u.RepoURL == "") != (len(u.TUFRoot) == 0) {
			return errors.New("image: an update repository needs its TUF root, and a root its repository")
		}
		if u.RepoURL != "" {
			p, err := url.Parse(u.RepoURL)
			if err != nil || p.Scheme != "https" || p.Host == "" || p.User != nil || p.RawQuery != "" || p.Fragment != "" {
				return fmt.Errorf("image: update repository %q: want https://host/path/", u.RepoURL)
			}
			if !strings.HasSuffix(u.RepoURL, "/") {
				u.RepoURL += "/"
			}
			if _, err := metadata.Root().FromBytes(u.TUFRoot); err != nil {
				return fmt.Errorf("image: update repository root: %w", err)
			}
		}
		if len(u.RepoCA) > 0 {
			if u.RepoURL == "" {
				return errors.New("image: an update repository CA needs the repository")
			}
			ca, err := canonicalCAs(u.RepoCA, "update repository CA")
			if err != nil {
				return err
			}
			u.RepoCA = ca
		}
		o.update = &u
		return nil
	}
}

// files are the staged files of an updatable image, by path.
func (u *UpdateTrust) files(board, version string) (map[string][]byte, error) {
	rel, err := json.MarshalIndent(update.Release{Board: board, Version: version, VersionNumber: u.VersionNumber, Floor: u.Floor,
		Repo: u.RepoURL, RepoCA: len(u.RepoCA) > 0}, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := update.ParseRelease(rel); err != nil {
		return nil, err
	}
	fs := map[string][]byte{strings.TrimPrefix(update.ReleasePath, "/"): append(rel, '\n'),
		strings.TrimPrefix(bundle.KeyringPath, "/"): u.Keyring}
	if u.RepoURL != "" {
		fs[UpdateRootPath] = u.TUFRoot
	}
	if len(u.RepoCA) > 0 {
		fs[strings.TrimPrefix(update.RepoCAPath, "/")] = u.RepoCA
	}
	return fs, nil
}
