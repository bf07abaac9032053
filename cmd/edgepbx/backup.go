package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// boxClient talks to a box's admin API with an API token, over TLS pinned
// to the box's certificate fingerprint when one is given (a new box serves
// a self-signed certificate).
type boxClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

func newBoxClient(box, token, fingerprint string) (*boxClient, error) {
	u, err := url.Parse(box)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("--box must be https://host[:port], got %q", box)
	}
	if token == "" {
		return nil, errors.New("an API token is needed (--token-file or EDGEPBX_TOKEN; make one on the account page)")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if fingerprint != "" {
		want, err := hex.DecodeString(strings.NewReplacer(":", "", " ", "").Replace(fingerprint))
		if err != nil || len(want) != sha256.Size {
			return nil, fmt.Errorf("--fingerprint must be the SHA-256 of the box's certificate (AA:BB:…), got %q", fingerprint)
		}
		// Pinned: the certificate must be exactly this one, whoever signed it.
		tc.InsecureSkipVerify = true
		tc.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("box sent no certificate")
			}
			got := sha256.Sum256(raw[0])
			if !bytes.Equal(got[:], want) {
				return fmt.Errorf("box certificate %X does not match --fingerprint", got)
			}
			return nil
		}
	}
	return &boxClient{base: u, token: token, http: &http.Client{Timeout: 30 * time.Minute,
		Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}}, nil
}

func (c *boxClient) do(method, path string, body io.Reader, ctype string) (*http.Response, error) {
	req, err := http.NewRequest(method, c.base.JoinPath(path).String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode >= 300 {
		defer res.Body.Close()
		var p struct{ Title, Detail string }
		_ = json.NewDecoder(io.LimitReader(res.Body, 64<<10)).Decode(&p)
		return nil, fmt.Errorf("%s %s: %d %s: %s", method, path, res.StatusCode, p.Title, p.Detail)
	}
	return res, nil
}

func (c *boxClient) json(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	res, err := c.do(method, path, body, "application/json")
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(out)
}

// secret reads a secret from a file (first line) or, if no file is given,
// from an environment variable: never from the command line, where other
// users see it in the process list.
func secret(file, env string) (string, error) {
	if file == "" {
		return os.Getenv(env), nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(strings.SplitN(string(raw), "\n", 2)[0], "\r"), nil
}

func newBackupCmd() *cobra.Command {
	var box, fingerprint, tokenFile, passwordFile, keyFile, passphraseFile, out, fromTarget string
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "List, make, download and restore a box's encrypted backups over its admin API",
		Long: `Talks to a box's admin API with an API token (EDGEPBX_TOKEN or --token-file).
Restores need the token owner's current password (EDGEPBX_PASSWORD or --password-file)
and the backup key (--key-file) or passphrase (EDGEPBX_BACKUP_PASSPHRASE or --passphrase-file).`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&box, "box", "", "the box's admin URL, https://host[:port]")
	pf.StringVar(&fingerprint, "fingerprint", "", "SHA-256 fingerprint of the box's certificate (as on its console); pins TLS")
	pf.StringVar(&tokenFile, "token-file", "", "file holding the API token (default: $EDGEPBX_TOKEN)")
	client := func() (*boxClient, error) {
		tok, err := secret(tokenFile, "EDGEPBX_TOKEN")
		if err != nil {
			return nil, err
		}
		return newBoxClient(box, tok, fingerprint)
	}
	list := &cobra.Command{Use: "list", Short: "List the backups kept on the box", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			var l struct {
				Backups []struct {
					Name    string    `json:"name"`
					Kind    string    `json:"kind"`
					Created time.Time `json:"created"`
					Size    int64     `json:"size"`
				} `json:"backups"`
			}
			if err := c.json("GET", "/api/v1/backups", nil, &l); err != nil {
				return err
			}
			for _, b := range l.Backups {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\t%d\n", b.Name, b.Kind, b.Created.Format(time.RFC3339), b.Size)
			}
			return nil
		}}
	create := &cobra.Command{Use: "create", Short: "Make a backup now (to the box's backup key, or a passphrase)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			req := map[string]string{}
			if passphraseFile != "" {
				if req["passphrase"], err = secret(passphraseFile, ""); err != nil {
					return err
				}
				if req["current_password"], err = secret(passwordFile, "EDGEPBX_PASSWORD"); err != nil {
					return err
				}
			}
			var f struct {
				Name string `json:"name"`
			}
			if err := c.json("POST", "/api/v1/backups", req, &f); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), f.Name)
			return nil
		}}
	download := &cobra.Command{Use: "download NAME", Short: "Download a backup file", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			res, err := c.do("GET", "/api/v1/backups/"+url.PathEscape(args[0]), nil, "")
			if err != nil {
				return err
			}
			defer res.Body.Close()
			dst := out
			if dst == "" {
				dst = filepath.Base(args[0])
			}
			return writeFileAtomic(dst, res.Body)
		}}
	download.Flags().StringVarP(&out, "output", "o", "", "file to write (default: the backup's name)")
	restore := &cobra.Command{Use: "restore FILE|NAME", Short: "Upload a backup (or, with --from-target, fetch NAME from the box's SFTP or S3 target) and restore it on the box (replaces its data)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			req := map[string]string{}
			if req["identity"], err = secret(keyFile, "EDGEPBX_BACKUP_KEY"); err != nil {
				return err
			}
			if req["passphrase"], err = secret(passphraseFile, "EDGEPBX_BACKUP_PASSPHRASE"); err != nil {
				return err
			}
			if req["current_password"], err = secret(passwordFile, "EDGEPBX_PASSWORD"); err != nil {
				return err
			}
			for k, v := range req {
				if v == "" {
					delete(req, k)
				}
			}
			var up struct {
				Upload string `json:"upload"`
			}
			if fromTarget != "" {
				// The box copies the file from its target itself.
				if err := c.json("POST", "/api/v1/backups/targets/"+url.PathEscape(fromTarget)+"/fetch",
					map[string]string{"name": args[0]}, &up); err != nil {
					return err
				}
			} else {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				res, err := c.do("POST", "/api/v1/backups/upload", f, "application/octet-stream")
				if err != nil {
					return err
				}
				err = json.NewDecoder(io.LimitReader(res.Body, 4096)).Decode(&up)
				res.Body.Close()
				if err != nil {
					return fmt.Errorf("upload answer: %w", err)
				}
			}
			req["upload"] = up.Upload
			var r struct {
				Status string `json:"status"`
			}
			if err := c.json("POST", "/api/v1/backups/restore", req, &r); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), r.Status)
			return nil
		}}
	for _, c := range []*cobra.Command{create, restore} {
		c.Flags().StringVar(&passwordFile, "password-file", "", "file holding the token owner's current password (default: $EDGEPBX_PASSWORD)")
		c.Flags().StringVar(&passphraseFile, "passphrase-file", "", "file holding the backup passphrase")
	}
	restore.Flags().StringVar(&keyFile, "key-file", "", "file holding the backup key, AGE-SECRET-KEY-1… (default: $EDGEPBX_BACKUP_KEY)")
	restore.Flags().StringVar(&fromTarget, "from-target", "", "restore NAME from the box's remote target (sftp or s3) instead of a local FILE")
	targets := &cobra.Command{Use: "targets", Short: "Show the box's remote targets (SFTP, S3) and the last upload's outcome", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			var v targetList
			if err := c.json("GET", "/api/v1/backups/targets", nil, &v); err != nil {
				return err
			}
			v.print(cmd.OutOrStdout())
			return nil
		}}
	push := &cobra.Command{Use: "push", Short: "Upload now the kept backups the remote targets lack (and apply their retention); waits for the outcome", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			var v targetList
			if err := c.json("POST", "/api/v1/backups/targets/push", nil, &v); err != nil {
				return err
			}
			v.print(cmd.OutOrStdout())
			return nil
		}}
	remoteList := &cobra.Command{Use: "remote-list sftp|s3", Short: "List the backups on the box's remote target (other boxes' too), newest first", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			var l struct {
				Files []backupFile `json:"files"`
			}
			if err := c.json("GET", "/api/v1/backups/targets/"+url.PathEscape(args[0])+"/files", nil, &l); err != nil {
				return err
			}
			for _, b := range l.Files {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\t%d\n", b.Name, b.Kind, b.Created.Format(time.RFC3339), b.Size)
			}
			return nil
		}}
	cmd.AddCommand(list, create, download, restore, targets, push, remoteList)
	return cmd
}

type backupFile struct {
	Name    string    `json:"name"`
	Kind    string    `json:"kind"`
	Created time.Time `json:"created"`
	Size    int64     `json:"size"`
}

// targetList is the answer of GET /api/v1/backups/targets (and of a push).
type targetList struct {
	Targets []struct {
		Kind    string `json:"kind"`
		Enabled bool   `json:"enabled"`
		Host    string `json:"host"`
		Port    int    `json:"port"`
		Path    string `json:"path"`
		Bucket  string `json:"bucket"`
		Prefix  string `json:"prefix"`
		User    string `json:"user"`
		Status  *struct {
			Time    time.Time `json:"time"`
			OK      bool      `json:"ok"`
			Message string    `json:"message"`
		} `json:"status"`
	} `json:"targets"`
}

// print shows one target a line: kind, on/off, where, last outcome.
func (v targetList) print(w io.Writer) {
	for _, t := range v.Targets {
		state := "disabled"
		if t.Enabled {
			state = "enabled"
		}
		where := t.User + "@" + t.Host + ":" + strconv.Itoa(t.Port) + " " + t.Path + t.Bucket
		if t.Prefix != "" {
			where += "/" + t.Prefix
		}
		last := "never uploaded"
		if t.Status != nil {
			ok := "FAILED"
			if t.Status.OK {
				ok = "ok"
			}
			last = fmt.Sprintf("%s %s: %s", t.Status.Time.Format(time.RFC3339), ok, t.Status.Message)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.Kind, state, where, last)
	}
}

// writeFileAtomic writes r to path through a temporary file and a rename.
func writeFileAtomic(path string, r io.Reader) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".edgepbx-backup-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
