package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgepbx/edgepbx/firmware/update"
	"github.com/edgepbx/edgepbx/init/control"
)

func newUpdateCmd() *cobra.Command {
	var box, fingerprint, tokenFile, policy, window string
	var pull bool
	cmd := &cobra.Command{
		Use:   "update --box https://HOST[:PORT] [BUNDLE | --pull | --policy MODE --window HH:MM/H]",
		Short: "Install a signed update bundle on a box over its admin API (no BUNDLE: show the box's update state)",
		Long: `Streams the bundle to the box (API token from EDGEPBX_TOKEN or --token-file); the box's PID 1
verifies it and writes the inactive slot, and the next boot is a trial that commits when healthy.
Progress is printed while the box writes.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := secret(tokenFile, "EDGEPBX_TOKEN")
			if err != nil {
				return err
			}
			c, err := newBoxClient(box, tok, fingerprint)
			if err != nil {
				return err
			}
			switch {
			case pull && (policy != "" || len(args) > 0), policy != "" && len(args) > 0:
				return errors.New("give one of BUNDLE, --pull and --policy")
			case pull:
				var rep update.Report
				if err := c.json("POST", "/api/v1/update/pull", nil, &rep); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", rep.Action, rep.Detail)
				return nil
			case policy != "":
				pol, err := parsePolicy(policy, window)
				if err != nil {
					return err
				}
				if err := c.json("PUT", "/api/v1/update/policy", pol, nil); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "policy %s, window %s for %d h\n", pol.Mode, pol.Window.Start, pol.Window.Hours)
				return nil
			}
			if len(args) == 0 {
				var st control.UpdateStatus
				if err := c.json("GET", "/api/v1/update", nil, &st); err != nil {
					return err
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return c.installUpdate(cmd.Context(), args[0], cmd.OutOrStdout(), cmd.ErrOrStderr())
		}}
	f := cmd.Flags()
	f.StringVar(&box, "box", "", "the box's admin URL, https://host[:port]")
	f.StringVar(&fingerprint, "fingerprint", "", "SHA-256 fingerprint of the box's certificate (as on its console); pins TLS")
	f.StringVar(&tokenFile, "token-file", "", "file holding the API token (default: $EDGEPBX_TOKEN)")
	f.BoolVar(&pull, "pull", false, "look at the vendor's repository now and install the newest bundle (whatever the policy)")
	f.StringVar(&policy, "policy", "", "set the pulled-update policy: off, notify, security-only or all")
	f.StringVar(&window, "window", "03:00/2", "with --policy: maintenance window START/HOURS")
	_ = cmd.MarkFlagRequired("box")
	return cmd
}

// installUpdate uploads a bundle with its length (the box needs it before
// the first byte) and reports the box's progress while it writes.
func (c *boxClient) installUpdate(ctx context.Context, path string, out, progress io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", c.base.JoinPath("/api/v1/update").String(), f)
	if err != nil {
		return err
	}
	req.ContentLength = fi.Size()
	req.GetBody = nil
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/octet-stream")

	pctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.watchProgress(pctx, progress)
	}()
	res, err := c.http.Do(req)
	stop()
	<-done
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		var p struct{ Title, Detail, Reason, Field string }
		_ = json.Unmarshal(body, &p)
		if p.Reason != "" {
			return fmt.Errorf("%s (%s): %s", p.Title, p.Reason, p.Detail)
		}
		return fmt.Errorf("POST /api/v1/update: %d %s: %s", res.StatusCode, p.Title, p.Detail)
	}
	var r struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("update answer: %w", err)
	}
	fmt.Fprintln(out, r.Status)
	return nil
}

// watchProgress prints the box's written/total about once a second.
func (c *boxClient) watchProgress(ctx context.Context, w io.Writer) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := int64(-1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		req, err := http.NewRequestWithContext(ctx, "GET", c.base.JoinPath("/api/v1/update").String(), nil)
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		res, err := c.http.Do(req)
		if err != nil {
			continue
		}
		var st control.UpdateStatus
		err = json.NewDecoder(io.LimitReader(res.Body, 64<<10)).Decode(&st)
		res.Body.Close()
		if err == nil && st.Installing && st.Written != last {
			last = st.Written
			fmt.Fprintf(w, "box wrote %s of %s (%d%%)\n", humanSize(st.Written), humanSize(st.Total), st.Written*100/max(st.Total, 1))
		}
	}
}

// parsePolicy reads --policy and --window ("HH:MM/HOURS"); the box
// validates it again.
func parsePolicy(mode, window string) (update.Policy, error) {
	start, hours, ok := strings.Cut(window, "/")
	h, err := strconv.Atoi(hours)
	if !ok || err != nil {
		return update.Policy{}, fmt.Errorf("--window %q: want HH:MM/HOURS, e.g. 03:00/2", window)
	}
	p := update.Policy{Mode: update.Mode(mode), Window: update.Window{Start: start, Hours: h}}
	return p, p.Validate()
}
