package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/provision"
)

// TestProvisioningWired: edgepbxd serves the bootstrap (the box's own
// certificate as CA) over plain HTTP and configurations over HTTPS on the
// provisioning listeners, with the SIP edge's extensions and the admin API.
func TestProvisioningWired(t *testing.T) {
	dir := t.TempDir()
	d, err := newDaemon(config{devDir: dir, dataDir: dir, httpsAddr: "127.0.0.1:0", sipAddr: "127.0.0.1:0",
		provHTTPSAddr: "127.0.0.1:0", provHTTPAddr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.serveProvisioning(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	get := func(c *http.Client, url string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("User-Agent", "Yealink SIP-T46S 66.86.0.15 80:5e:c0:11:22:33")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	plain := &http.Client{}
	code, ca := get(plain, "http://"+d.provHTTPLn.Addr().String()+"/ca.pem")
	if code != 200 || !strings.Contains(ca, "BEGIN CERTIFICATE") {
		t.Fatalf("CA: %d %q", code, ca)
	}
	tlsc := pinnedClient(d.certs.Fingerprint(), 0, 0)
	cfgURL := "https://" + d.provLn.Addr().String() + "/805ec0112233.cfg"
	if code, _ := get(tlsc, cfgURL); code != 401 {
		t.Fatalf("unknown phone: %d", code)
	}
	if err := d.sip.Extensions().Set("101", "initial-password-1"); err != nil {
		t.Fatal(err)
	}
	before, _ := d.sip.Extensions().HA1("101", "MD5")
	if _, err := d.prov.Add(provision.AddRequest{MAC: "805ec0112233", Vendor: provision.Yealink, Extensions: []string{"101"}, Approve: true}, "test", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	code, body := get(tlsc, cfgURL)
	if code != 200 || !strings.Contains(body, "account.1.password = ") {
		t.Fatalf("approved phone in window: %d %s", code, body)
	}
	pw := strings.TrimSpace(strings.SplitN(strings.SplitAfter(body, "account.1.password = ")[1], "\n", 2)[0])
	if after, ok := d.sip.Extensions().HA1("101", "MD5"); !ok || after == before || len(pw) != 26 {
		t.Fatal("the registrar did not get the phone's new SIP password")
	}
}
