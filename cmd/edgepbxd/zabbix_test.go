package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Debian's Zabbix 6.0 pieces the template test runs: PostgreSQL for the
// database, the PHP frontend for its API (configuration.import), the server
// for polling and preprocessing.
const (
	zabbixFrontend = "/usr/share/zabbix"
	zabbixSchema   = "/usr/share/zabbix-server-pgsql"
	zabbixServer   = "/usr/sbin/zabbix_server"
)

// zabbix is a private Zabbix (database, frontend API, server) on loopback,
// run as the unprivileged test uid.
type zabbix struct {
	api  string
	auth string
}

func needZabbix(t *testing.T) (pgBin string) {
	t.Helper()
	netnstest.NeedRoot(t, "the Zabbix server and PostgreSQL run as an unprivileged uid; the frontend config path is bind-mounted")
	pgs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	var missing []string
	if len(pgs) == 0 {
		missing = append(missing, "postgresql")
	}
	for _, f := range []string{zabbixServer, zabbixSchema + "/schema.sql.gz", zabbixFrontend + "/api_jsonrpc.php"} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	for _, b := range []string{"php", "unshare", "setpriv"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("Zabbix test needs Debian's postgresql, zabbix-server-pgsql, zabbix-frontend-php, php-pgsql, php-cli; missing %v", missing)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return filepath.Dir(pgs[0])
}

// asUser runs a command as the unprivileged test uid.
func asUser(name string, args ...string) *exec.Cmd {
	return exec.Command("setpriv", append([]string{fmt.Sprintf("--reuid=%d", unprivUID), fmt.Sprintf("--regid=%d", unprivUID), "--clear-groups", name}, args...)...)
}

func runOK(t *testing.T, c *exec.Cmd) {
	t.Helper()
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", c.Args, err, out)
	}
}

// startZabbix creates a PostgreSQL cluster in a temporary directory, loads
// the Zabbix schema, serves the frontend with PHP's built-in server (its
// fixed config path /etc/zabbix bind-mounted over in a private mount
// namespace) and starts zabbix_server in the foreground.
func startZabbix(t *testing.T, pgBin string) *zabbix {
	t.Helper()
	dir, err := os.MkdirTemp("", "edgepbx-zabbix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"pg", "etc", "srv"} {
		os.Mkdir(filepath.Join(dir, d), 0o700)
	}
	for _, d := range []string{dir, filepath.Join(dir, "pg"), filepath.Join(dir, "etc"), filepath.Join(dir, "srv")} {
		if err := os.Chown(d, unprivUID, unprivUID); err != nil {
			t.Fatal(err)
		}
	}
	pgPort := netnstest.FreePort(t, "tcp")
	runOK(t, asUser(filepath.Join(pgBin, "initdb"), "-D", filepath.Join(dir, "pg"), "-U", "zabbix", "--auth=trust"))
	runOK(t, asUser(filepath.Join(pgBin, "pg_ctl"), "-D", filepath.Join(dir, "pg"), "-o",
		fmt.Sprintf("-k %s -c listen_addresses='' -p %d", dir, pgPort), "-l", filepath.Join(dir, "pg.log"), "-w", "start"))
	t.Cleanup(func() {
		asUser(filepath.Join(pgBin, "pg_ctl"), "-D", filepath.Join(dir, "pg"), "-m", "immediate", "stop").Run()
	})
	runOK(t, asUser(filepath.Join(pgBin, "createdb"), "-h", dir, "-p", strconv.Itoa(pgPort), "-U", "zabbix", "zabbix"))
	for _, f := range []string{"schema", "images", "data"} {
		raw, err := os.ReadFile(filepath.Join(zabbixSchema, f+".sql.gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		psql := asUser(filepath.Join(pgBin, "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-h", dir, "-p", strconv.Itoa(pgPort), "-U", "zabbix", "zabbix")
		psql.Stdin = zr
		runOK(t, psql)
	}
	conf := fmt.Sprintf(`<?php
$DB['TYPE'] = ZBX_DB_POSTGRESQL;
$DB['SERVER'] = '%s';
$DB['PORT'] = '%d';
$DB['DATABASE'] = 'zabbix';
$DB['USER'] = 'zabbix';
$DB['PASSWORD'] = '';
$DB['SCHEMA'] = '';
$DB['ENCRYPTION'] = false;
$DB['KEY_FILE'] = '';
$DB['CERT_FILE'] = '';
$DB['CA_FILE'] = '';
$DB['VERIFY_HOST'] = false;
$DB['CIPHER_LIST'] = '';
$DB['VAULT_URL'] = '';
$DB['VAULT_DB_PATH'] = '';
$DB['VAULT_TOKEN'] = '';
$DB['DOUBLE_IEEE754'] = true;
$ZBX_SERVER = '127.0.0.1';
$ZBX_SERVER_PORT = '10051';
$ZBX_SERVER_NAME = 'edgepbx-test';
$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
`, dir, pgPort)
	writeFile(t, filepath.Join(dir, "etc", "zabbix.conf.php"), []byte(conf))
	os.Chown(filepath.Join(dir, "etc", "zabbix.conf.php"), unprivUID, unprivUID)
	webPort := netnstest.FreePort(t, "tcp")
	// Output to files, not pipes: a killed process's children must not keep
	// Wait waiting for a pipe to close.
	out, err := os.Create(filepath.Join(dir, "out.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	php := exec.Command("unshare", "--mount", "--", "sh", "-c",
		fmt.Sprintf(`mount --bind "$1" /etc/zabbix && exec setpriv --reuid=%d --regid=%d --clear-groups php -S 127.0.0.1:%d -t %s`, unprivUID, unprivUID, webPort, zabbixFrontend),
		"sh", filepath.Join(dir, "etc"))
	php.Stdout, php.Stderr = out, out
	if err := php.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { php.Process.Kill(); php.Wait() })

	srvConf := fmt.Sprintf(`LogFile=%[1]s/srv/server.log
LogFileSize=0
PidFile=%[1]s/srv/server.pid
SocketDir=%[1]s/srv
DBHost=%[1]s
DBPort=%[2]d
DBName=zabbix
DBUser=zabbix
ListenIP=127.0.0.1
ListenPort=%[3]d
StartPollers=2
StartPollersUnreachable=1
StartTrappers=1
StartPingers=0
StartDiscoverers=0
StartHTTPPollers=0
StartPreprocessors=1
StartDBSyncers=1
StartReportWriters=0
CacheUpdateFrequency=1
CacheSize=16M
HistoryCacheSize=8M
HistoryIndexCacheSize=4M
TrendCacheSize=4M
ValueCacheSize=8M
Timeout=10
`, dir, pgPort, zabbixTrapperPort(t))
	writeFile(t, filepath.Join(dir, "srv", "zabbix_server.conf"), []byte(srvConf))
	os.Chown(filepath.Join(dir, "srv", "zabbix_server.conf"), unprivUID, unprivUID)
	srv := asUser(zabbixServer, "-f", "-c", filepath.Join(dir, "srv", "zabbix_server.conf"))
	srv.Stdout, srv.Stderr = out, out
	// Its own process group: zabbix_server forks ~30 workers, all stopped
	// with it by their group id.
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-srv.Process.Pid, syscall.SIGKILL)
		srv.Wait()
		if t.Failed() {
			o, _ := os.ReadFile(filepath.Join(dir, "out.log"))
			log, _ := os.ReadFile(filepath.Join(dir, "srv", "server.log"))
			t.Logf("zabbix output:\n%s\nserver log (tail):\n%s", o, tail(string(log), 4000))
		}
	})

	z := &zabbix{api: fmt.Sprintf("http://127.0.0.1:%d/api_jsonrpc.php", webPort)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		var tok string
		if err := z.call("user.login", map[string]any{"username": "Admin", "password": "zabbix"}, &tok); err == nil {
			z.auth = tok
			return z
		}
		select {
		case <-ctx.Done():
			o, _ := os.ReadFile(filepath.Join(dir, "out.log"))
			t.Fatalf("Zabbix frontend API did not come up: %s", o)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// zabbixTrapperPort is a free port in the range zabbix_server accepts
// (1024..32767).
func zabbixTrapperPort(t *testing.T) int {
	for p := 31000; p < 32700; p++ {
		if l, err := netListen(p); err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port for the Zabbix trapper")
	return 0
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// call is one JSON-RPC call to the frontend API; a Zabbix error is returned
// with its data.
func (z *zabbix) call(method string, params any, result any) error {
	req := map[string]any{"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
	if z.auth != "" {
		req["auth"] = z.auth
	}
	body, _ := json.Marshal(req)
	resp, err := http.Post(z.api, "application/json-rpc", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	var ans struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Message string `json:"message"`
			Data    string `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return fmt.Errorf("%s: %w: %.300s", method, err, raw)
	}
	if ans.Error != nil {
		return fmt.Errorf("%s: %s %s", method, ans.Error.Message, ans.Error.Data)
	}
	return json.Unmarshal(ans.Result, result)
}

func (z *zabbix) must(t *testing.T, method string, params any, result any) {
	t.Helper()
	if err := z.call(method, params, result); err != nil {
		t.Fatal(err)
	}
}

type zabbixHostItem struct {
	Key       string `json:"key_"`
	State     string `json:"state"` // "0" normal, "1" not supported
	Error     string `json:"error"`
	LastValue string `json:"lastvalue"`
	LastClock string `json:"lastclock"`
}

// TestDevModeZabbix imports docs/monitoring/zabbix-edgepbx.yaml into a real
// Zabbix 6.0 (Debian's frontend API validates it: structure, item types,
// preprocessing, trigger expressions) and lets the real Zabbix server poll
// the dev-mode box with it: every item, including each dependent item's
// Prometheus pattern in Zabbix's own preprocessing, must be supported and
// the values must be the box's. A host with a wrong token gets the 401.
func TestDevModeZabbix(t *testing.T) {
	pgBin := needZabbix(t)
	z := startZabbix(t, pgBin)
	tmpl, err := os.ReadFile(zabbixTemplate)
	if err != nil {
		t.Fatal(err)
	}
	var ok bool
	z.must(t, "configuration.import", map[string]any{"format": "yaml", "source": string(tmpl), "rules": map[string]any{
		"groups":    map[string]bool{"createMissing": true},
		"templates": map[string]bool{"createMissing": true, "updateExisting": true},
		"items":     map[string]bool{"createMissing": true, "updateExisting": true},
		"triggers":  map[string]bool{"createMissing": true, "updateExisting": true},
	}}, &ok)
	// A broken copy is refused, so the import above did check something.
	broken := strings.Replace(string(tmpl), "master_item:\n        key: edgepbx.get_metrics", "master_item:\n        key: edgepbx.nonexistent", 1)
	if broken == string(tmpl) {
		t.Fatal("no dependent item to break")
	}
	if err := z.call("configuration.import", map[string]any{"format": "yaml", "source": broken, "rules": map[string]any{
		"templates": map[string]bool{"createMissing": true, "updateExisting": true},
		"items":     map[string]bool{"createMissing": true, "updateExisting": true},
	}}, &ok); err == nil {
		t.Fatal("Zabbix imported a template whose dependent item has no master")
	}

	var tps []struct {
		ID string `json:"templateid"`
	}
	z.must(t, "template.get", map[string]any{"filter": map[string]any{"host": "edgepbx by HTTP"}}, &tps)
	var groups []struct {
		ID string `json:"groupid"`
	}
	z.must(t, "hostgroup.get", map[string]any{"filter": map[string]any{"name": "Linux servers"}}, &groups)
	if len(tps) != 1 || len(groups) != 1 {
		t.Fatalf("template %v, group %v", tps, groups)
	}
	// The dev box's self-signed certificate names no address Zabbix reaches
	// it by: verification off for this run only (the template verifies).
	var masters []struct {
		ID string `json:"itemid"`
	}
	z.must(t, "item.get", map[string]any{"templateids": tps[0].ID, "filter": map[string]any{"key_": "edgepbx.get_metrics"}}, &masters)
	var upd any
	z.must(t, "item.update", map[string]any{"itemid": masters[0].ID, "verify_peer": 0, "verify_host": 0}, &upd)

	base, _, tok, _ := metricsBox(t)
	u, _ := url.Parse(base)
	port := u.Port()
	newHost := func(name, token string) string {
		var ans struct {
			IDs []string `json:"hostids"`
		}
		z.must(t, "host.create", map[string]any{
			"host": name, "groups": []any{map[string]string{"groupid": groups[0].ID}},
			"interfaces": []any{map[string]any{"type": 1, "main": 1, "useip": 1, "ip": "127.0.0.1", "dns": "", "port": "10050"}},
			"templates":  []any{map[string]string{"templateid": tps[0].ID}},
			"macros": []any{
				map[string]any{"macro": "{$EDGEPBX.TOKEN}", "value": token, "type": 1},
				map[string]any{"macro": "{$EDGEPBX.PORT}", "value": port},
				map[string]any{"macro": "{$EDGEPBX.INTERVAL}", "value": "2s"},
			},
		}, &ans)
		return ans.IDs[0]
	}
	good, wrong := newHost("box", tok), newHost("box-wrong-token", "ebx_"+strings.Repeat("z", 43))

	items := func(host string) map[string]zabbixHostItem {
		var l []zabbixHostItem
		z.must(t, "item.get", map[string]any{"hostids": host, "output": []string{"key_", "state", "error", "lastvalue", "lastclock"}}, &l)
		m := map[string]zabbixHostItem{}
		for _, it := range l {
			m[it.Key] = it
		}
		return m
	}
	// Wait until every dependent item has a value (rates need two polls)
	// or one is not supported.
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var got map[string]zabbixHostItem
	for {
		got = items(good)
		pending, bad := 0, false
		for k, it := range got {
			if it.State == "1" {
				bad = true
			}
			if k != "edgepbx.get_metrics" && it.LastClock == "0" {
				pending++
			}
		}
		if bad || (pending == 0 && len(got) > 0) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Zabbix items still without values: %+v", got)
		case <-time.After(500 * time.Millisecond):
		}
	}
	for k, it := range got {
		if it.State != "0" || it.Error != "" {
			t.Errorf("Zabbix item %s not supported: %s", k, it.Error)
		}
	}
	for k, want := range map[string]string{
		"edgepbx.sip.registered.extensions": "1",
		"edgepbx.license.degraded":          "0",
		"edgepbx.calls.active":              "0",
	} {
		if v := got[k].LastValue; v != want {
			t.Errorf("Zabbix %s = %q, want %s", k, v, want)
		}
	}
	if v, err := strconv.ParseFloat(got["edgepbx.cert.expiry"].LastValue, 64); err != nil || v < 14*86400 {
		t.Errorf("Zabbix certificate expiry %q", got["edgepbx.cert.expiry"].LastValue)
	}
	// The host with a wrong token: its master item fails with the box's 401.
	for {
		m := items(wrong)["edgepbx.get_metrics"]
		if m.State == "1" {
			if !strings.Contains(m.Error, "401") {
				t.Errorf("wrong token: master item error %q, want the 401", m.Error)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("wrong-token host: master item %+v", m)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func netListen(port int) (io.Closer, error) {
	return net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
}
