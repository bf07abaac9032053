package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/auth"
)

// The monitoring files shipped in the repository.
const (
	zabbixTemplate   = "../../docs/monitoring/zabbix-edgepbx.yaml"
	grafanaDashboard = "../../docs/monitoring/grafana-edgepbx.json"
)

func needPrometheus(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err == nil {
		return bin
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("prometheus (Debian package prometheus) missing: %v", err)
	}
	t.Skipf("prometheus (Debian package prometheus) missing: %v", err)
	return ""
}

// scrape GETs /metrics with token ("": none) from the local address from
// ("": any); it returns the status and body.
func scrape(t *testing.T, base, fp, token, from string) (int, []byte) {
	t.Helper()
	c := pinnedClient(fp, 0, 0)
	defer c.CloseIdleConnections()
	if from != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c.Transport.(*http.Transport).DialContext = d.DialContext
	}
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, b
}

func parseScrape(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("scrape does not parse: %v", err)
	}
	return fams
}

func createToken(t *testing.T, c *apiClient, name string, scopes ...string) string {
	t.Helper()
	var ans struct {
		Token string `json:"token"`
	}
	out := c.must(http.StatusCreated, "POST", "/api/v1/me/tokens", admin.TokenRequest{Proof: auth.Proof{Password: testAdminPW}, Name: name, Scopes: scopes, Days: 1})
	if err := json.Unmarshal(out, &ans); err != nil || ans.Token == "" {
		t.Fatalf("token answer %s: %v", out, err)
	}
	return ans.Token
}

// TestDevModePrometheus runs the real daemon (dev mode, licensed by the
// real vendor server, one phone registered) and Debian's real Prometheus
// scraping it over HTTPS: off until the admin allows a network; then the
// job with the metrics token is up and reads the registrations and the
// licence, while the jobs without a token or with a wrong one are refused
// (401), as are a token of another scope and a source outside the allowed
// network (403). The Zabbix template and the Grafana dashboard in
// docs/monitoring are checked against this box's scrape, and every
// dashboard expression is evaluated by the running Prometheus.
func TestDevModePrometheus(t *testing.T) {
	promBin := needPrometheus(t)
	base, fp, tok, readTok := metricsBox(t)

	for _, tc := range []struct {
		name, token, from string
		want              int
	}{
		{"no token", "", "", http.StatusUnauthorized},
		{"wrong token", "ebx_" + strings.Repeat("x", 43), "", http.StatusUnauthorized},
		{"read scope", readTok, "", http.StatusForbidden},
		{"other network", tok, "127.0.0.2", http.StatusForbidden},
	} {
		if st, b := scrape(t, base, fp, tc.token, tc.from); st != tc.want || !strings.Contains(string(b), `"status":`) || strings.Contains(string(b), "edgepbx_") {
			t.Errorf("%s: %d %s, want %d problem+json", tc.name, st, b, tc.want)
		}
	}
	st, body := scrape(t, base, fp, tok, "127.0.0.1")
	if st != http.StatusOK {
		t.Fatalf("scrape: %d %s", st, body)
	}
	fams := parseScrape(t, body)
	for name, want := range map[string]float64{
		"edgepbx_sip_registered_extensions": 1,
		"edgepbx_license_configured":        1,
		"edgepbx_license_degraded":          0,
	} {
		if f := fams[name]; f == nil || len(f.Metric) != 1 || f.Metric[0].GetGauge().GetValue() != want {
			t.Errorf("%s = %v, want %v", name, f, want)
		}
	}
	if v := seriesValue(fams["edgepbx_sip_events_total"], map[string]string{"stage": "auth", "outcome": "failed"}); v < 1 {
		t.Errorf("SIP auth failures %v, want ≥ 1", v)
	}
	if v := seriesValue(fams["edgepbx_metrics_refused_total"], map[string]string{"reason": "network"}); v < 2 {
		t.Errorf("refusals by network %v, want ≥ 2", v)
	}
	for _, name := range []string{"edgepbx_certificate_expiry_seconds", "edgepbx_store_size_bytes", "go_goroutines", "process_resident_memory_bytes",
		"edgepbx_calls_active", "edgepbx_media_packets_total", "edgepbx_admin_logins_total"} {
		if fams[name] == nil {
			t.Errorf("%s not exported", name)
		}
	}

	checkZabbixTemplate(t, zabbixTemplate, fams)
	exprs := grafanaExprs(t, grafanaDashboard)
	for _, e := range exprs {
		for _, n := range promQLMetricNames(e) {
			if family(fams, n) == nil {
				t.Errorf("Grafana expression %q names %s, which the box does not export", e, n)
			}
		}
	}

	// The real Prometheus, on loopback with its own config and data.
	prom := startPrometheus(t, promBin, base, fp, tok)
	prom.waitTargets(t, map[string]string{"edgepbx": "up", "edgepbx-no-token": "down", "edgepbx-wrong-token": "down"})
	for job, want := range map[string]string{"edgepbx-no-token": "401", "edgepbx-wrong-token": "401"} {
		if e := prom.targetError(t, job); !strings.Contains(e, want) {
			t.Errorf("job %s: last error %q, want %s", job, e, want)
		}
	}
	// Enough samples for rate() over the dashboard's windows.
	prom.waitQuery(t, `count_over_time(edgepbx_build_info{job="edgepbx"}[5m]) >= 3`)
	for q, want := range map[string]string{
		`up{job="edgepbx"}`: "1",
		`edgepbx_sip_registered_extensions{job="edgepbx"}`:    "1",
		`edgepbx_license_mode{job="edgepbx",mode="degraded"}`: "0",
		`up{job="edgepbx-no-token"}`:                          "0",
	} {
		if got := prom.query(t, q); len(got) != 1 || got[0] != want {
			t.Errorf("Prometheus %s = %v, want [%s]", q, got, want)
		}
	}
	for _, e := range exprs {
		e = strings.ReplaceAll(e, "$instance", ".+")
		if got := prom.query(t, e); len(got) == 0 {
			t.Errorf("Grafana expression %q: no result from Prometheus", e)
		}
	}
}

// metricsBox starts the dev-mode daemon licensed by the real vendor server,
// claims it, checks that /metrics is off by default, allows 127.0.0.1/32,
// registers the extension once (and fails once); it returns the admin URL,
// the certificate fingerprint, a metrics token and a read token.
func metricsBox(t *testing.T) (base, fp, tok, readTok string) {
	t.Helper()
	srv, licURL, licCA := licenceServer(t)
	if err := srv.PutLicence(phonehome.Licence{ID: "LIC-M1", ValidUntil: time.Now().Add(365 * 24 * time.Hour), MaxExtensions: 10, MaxTrunks: 2}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "dev")
	seedExtension(t, dir)
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0",
		"--license-url", licURL, "--license-id", "LIC-M1", "--license-ca", licCA)
	base = p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp = p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	p.waitLine(t, regexp.MustCompile(`msg="licence check-in good"`))
	c := claimBox(t, base, fp, code)
	tok = createToken(t, c, "prometheus", auth.ScopeMetrics)
	readTok = createToken(t, c, "reader", auth.ScopeRead)

	// Off by default: even loopback with the right token.
	if st, b := scrape(t, base, fp, tok, ""); st != http.StatusForbidden || !strings.Contains(string(b), "not in the networks") {
		t.Fatalf("default: %d %s, want 403", st, b)
	}
	c.must(http.StatusOK, "PUT", "/api/v1/security/metrics", admin.MetricsRequest{Networks: []string{"127.0.0.1/32"}})
	if _, ok := sipRegister(t, sipAddrs[1], testExtPW); ok == nil || ok.StatusCode != 200 {
		t.Fatalf("REGISTER: %v", ok)
	}
	sipRegister(t, sipAddrs[1], "wrong-password") // one SIP auth failure

	return base, fp, tok, readTok
}

// seriesValue is the value of the series of f whose labels include want.
func seriesValue(f *dto.MetricFamily, want map[string]string) float64 {
	for _, m := range f.GetMetric() {
		if matchLabels(m, want) {
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return -1
}

func matchLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// family finds the family a sample name belongs to (a summary's _sum and
// _count are its own family's).
func family(fams map[string]*dto.MetricFamily, name string) *dto.MetricFamily {
	if f := fams[name]; f != nil {
		return f
	}
	for _, suf := range []string{"_sum", "_count", "_bucket"} {
		if f := fams[strings.TrimSuffix(name, suf)]; f != nil && strings.HasSuffix(name, suf) {
			return f
		}
	}
	return nil
}

// --- Zabbix template -------------------------------------------------------

type zabbixItem struct {
	UUID          string `yaml:"uuid"`
	Name          string `yaml:"name"`
	Type          string `yaml:"type"`
	Key           string `yaml:"key"`
	ValueType     string `yaml:"value_type"`
	URL           string `yaml:"url"`
	Preprocessing []struct {
		Type       string   `yaml:"type"`
		Parameters []string `yaml:"parameters"`
	} `yaml:"preprocessing"`
	MasterItem *struct {
		Key string `yaml:"key"`
	} `yaml:"master_item"`
	Headers []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"headers"`
	Triggers []struct {
		UUID       string `yaml:"uuid"`
		Expression string `yaml:"expression"`
		Name       string `yaml:"name"`
		Priority   string `yaml:"priority"`
	} `yaml:"triggers"`
}

type zabbixExport struct {
	Export struct {
		Version   string `yaml:"version"`
		Templates []struct {
			UUID     string       `yaml:"uuid"`
			Template string       `yaml:"template"`
			Items    []zabbixItem `yaml:"items"`
			Macros   []struct {
				Macro string `yaml:"macro"`
			} `yaml:"macros"`
		} `yaml:"templates"`
	} `yaml:"zabbix_export"`
}

var (
	uuidRE      = regexp.MustCompile(`^[0-9a-f]{32}$`)
	macroRE     = regexp.MustCompile(`\{\$[A-Z0-9_.]+\}`)
	itemRefRE   = regexp.MustCompile(`\(/([^/]+)/([^,)]+)`)
	patternRE   = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$`)
	matcherRE   = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$`)
	zabbixTypes = []string{"HTTP_AGENT", "DEPENDENT"}
	valueTypes  = []string{"FLOAT", "UNSIGNED", "TEXT", "CHAR", "LOG"}
	priorities  = []string{"INFO", "WARNING", "AVERAGE", "HIGH", "DISASTER"}
)

// checkZabbixTemplate parses the template and checks it structurally
// (Zabbix 6.0+ export: UUIDs, unique keys, known types, every dependent
// item's master present, triggers on the template's own items, macros
// defined) and against the box: every Prometheus pattern selects series
// the box exports (exactly one for "value").
func checkZabbixTemplate(t *testing.T, path string, fams map[string]*dto.MetricFamily) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var z zabbixExport
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&z); err == nil {
		t.Fatal("the strict decoder accepted unknown fields it does not model: the check structs are out of date")
	}
	if err := yaml.Unmarshal(raw, &z); err != nil {
		t.Fatalf("template: %v", err)
	}
	if v := z.Export.Version; !slices.Contains([]string{"6.0", "6.2", "6.4", "7.0", "7.2"}, v) {
		t.Fatalf("export version %q", v)
	}
	if len(z.Export.Templates) != 1 {
		t.Fatalf("%d templates", len(z.Export.Templates))
	}
	tp := z.Export.Templates[0]
	uuids := map[string]bool{tp.UUID: true}
	keys := map[string]zabbixItem{}
	macros := map[string]bool{}
	for _, m := range tp.Macros {
		macros[m.Macro] = true
	}
	useMacros := func(where, s string) {
		for _, m := range macroRE.FindAllString(s, -1) {
			if !macros[m] {
				t.Errorf("%s uses undefined macro %s", where, m)
			}
		}
	}
	newUUID := func(where, u string) {
		if !uuidRE.MatchString(u) || uuids[u] {
			t.Errorf("%s: uuid %q malformed or repeated", where, u)
		}
		uuids[u] = true
	}
	for _, it := range tp.Items {
		newUUID(it.Key, it.UUID)
		if _, dup := keys[it.Key]; dup || it.Key == "" || it.Name == "" {
			t.Errorf("item %q: empty or repeated key or name", it.Key)
		}
		keys[it.Key] = it
		if !slices.Contains(zabbixTypes, it.Type) || !slices.Contains(valueTypes, it.ValueType) {
			t.Errorf("item %s: type %s value_type %s", it.Key, it.Type, it.ValueType)
		}
	}
	var masters, patterns, triggers int
	for _, it := range tp.Items {
		useMacros(it.Key, it.URL)
		switch it.Type {
		case "HTTP_AGENT":
			masters++
			u, err := url.Parse(strings.NewReplacer("{HOST.CONN}", "box", "{$EDGEPBX.PORT}", "443").Replace(it.URL))
			if err != nil || u.Scheme != "https" || u.Path != "/metrics" {
				t.Errorf("master %s: url %q", it.Key, it.URL)
			}
			bearer := false
			for _, h := range it.Headers {
				useMacros(it.Key, h.Value)
				bearer = bearer || (h.Name == "Authorization" && strings.HasPrefix(h.Value, "Bearer {$"))
			}
			if !bearer {
				t.Errorf("master %s sends no bearer token", it.Key)
			}
		case "DEPENDENT":
			if it.MasterItem == nil || keys[it.MasterItem.Key].Type != "HTTP_AGENT" {
				t.Errorf("dependent item %s: master %+v missing", it.Key, it.MasterItem)
			}
			if len(it.Preprocessing) == 0 || it.Preprocessing[0].Type != "PROMETHEUS_PATTERN" {
				t.Errorf("dependent item %s: first step is not a Prometheus pattern", it.Key)
				continue
			}
			patterns++
			checkPattern(t, it.Key, it.Preprocessing[0].Parameters, fams)
		}
		for _, tr := range it.Triggers {
			triggers++
			newUUID(tr.Name, tr.UUID)
			useMacros(tr.Name, tr.Expression+tr.Name)
			if !slices.Contains(priorities, tr.Priority) {
				t.Errorf("trigger %q: priority %q", tr.Name, tr.Priority)
			}
			refs := itemRefRE.FindAllStringSubmatch(tr.Expression, -1)
			if len(refs) == 0 {
				t.Errorf("trigger %q references no item", tr.Name)
			}
			for _, r := range refs {
				if r[1] != tp.Template || keys[r[2]].Key == "" {
					t.Errorf("trigger %q references %s/%s, not an item of this template", tr.Name, r[1], r[2])
				}
			}
		}
	}
	if masters != 1 || patterns < 15 || triggers < 4 {
		t.Errorf("template has %d masters, %d patterns, %d triggers", masters, patterns, triggers)
	}
}

// checkPattern checks one Prometheus pattern step (pattern, value|label|
// function, label name or function) against the scrape.
func checkPattern(t *testing.T, key string, params []string, fams map[string]*dto.MetricFamily) {
	t.Helper()
	if len(params) != 3 {
		t.Errorf("%s: Prometheus pattern wants 3 parameters, got %q", key, params)
		return
	}
	m := patternRE.FindStringSubmatch(params[0])
	if m == nil {
		t.Errorf("%s: pattern %q does not parse", key, params[0])
		return
	}
	f := family(fams, m[1])
	if f == nil {
		t.Errorf("%s: pattern names %s, which the box does not export", key, m[1])
		return
	}
	var matchers [][]string
	if m[2] != "" {
		for _, part := range splitMatchers(m[2]) {
			mm := matcherRE.FindStringSubmatch(part)
			if mm == nil {
				t.Errorf("%s: label matcher %q does not parse", key, part)
				return
			}
			matchers = append(matchers, mm[1:])
		}
	}
	n := 0
	for _, s := range f.GetMetric() {
		if seriesMatches(s, matchers) {
			n++
		}
	}
	switch params[1] {
	case "value":
		if n != 1 {
			t.Errorf("%s: pattern %q selects %d series, want exactly 1", key, params[0], n)
		}
	case "function":
		if !slices.Contains([]string{"sum", "min", "max", "avg", "count"}, params[2]) || n == 0 {
			t.Errorf("%s: function %q over %d series", key, params[2], n)
		}
	case "label":
		if n != 1 || params[2] == "" {
			t.Errorf("%s: label %q of %d series", key, params[2], n)
		}
	default:
		t.Errorf("%s: result type %q", key, params[1])
	}
}

func splitMatchers(s string) []string {
	var out []string
	inQ, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && inQ:
			i++
		case s[i] == '"':
			inQ = !inQ
		case s[i] == ',' && !inQ:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func seriesMatches(m *dto.Metric, matchers [][]string) bool {
	for _, mt := range matchers {
		name, op, want := mt[0], mt[1], mt[2]
		val := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				val = l.GetValue()
			}
		}
		var ok bool
		switch op {
		case "=", "!=":
			ok = val == want
		default:
			ok = regexp.MustCompile("^(?:" + want + ")$").MatchString(val)
		}
		if strings.HasPrefix(op, "!") {
			ok = !ok
		}
		if !ok {
			return false
		}
	}
	return true
}

// --- Grafana dashboard -----------------------------------------------------

func grafanaExprs(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard: %v", err)
	}
	var out []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	return out
}

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promBraces   = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
)

// promQLMetricNames are the metric names a PromQL expression selects:
// identifiers outside strings, label lists, selectors and ranges that are
// neither functions nor keywords.
func promQLMetricNames(e string) []string {
	e = promStrings.ReplaceAllString(e, `""`)
	e = promGrouping.ReplaceAllString(e, " ")
	e = promBraces.ReplaceAllString(e, " ")
	var out []string
	for _, m := range promIdent.FindAllStringSubmatch(e, -1) {
		name := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(m[0]), "("))
		if m[1] != "" || slices.Contains(promKeywords, name) {
			continue
		}
		out = append(out, name)
	}
	return out
}

// --- Prometheus --------------------------------------------------------------

type prometheusProc struct {
	mu   sync.Mutex // guards out
	base string
	cmd  *exec.Cmd
	out  *strings.Builder
}

// startPrometheus runs Debian's Prometheus on loopback with its own
// configuration and data directory, scraping the box every second as three
// jobs: with the metrics token, without a token, with a wrong one. It
// trusts the box's own certificate (fetched with the pin).
func startPrometheus(t *testing.T, bin, boxBase, fp, token string) *prometheusProc {
	t.Helper()
	dir := t.TempDir()
	u, err := url.Parse(boxBase)
	if err != nil {
		t.Fatal(err)
	}
	// The box's certificate, as an admin would save it after comparing
	// the fingerprint with the console.
	conn, err := tls.Dial("tcp", u.Host, pinnedClient(fp, 0, 0).Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	writeFile(t, filepath.Join(dir, "box.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))
	serverName := "127.0.0.1"
	if !slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) }) {
		if len(leaf.DNSNames) == 0 {
			t.Fatalf("box certificate names neither 127.0.0.1 nor a DNS name")
		}
		serverName = leaf.DNSNames[0]
	}
	writeFile(t, filepath.Join(dir, "token"), []byte(token))
	writeFile(t, filepath.Join(dir, "wrong-token"), []byte("ebx_"+strings.Repeat("y", 43)))
	job := func(name, auth string) string {
		return fmt.Sprintf(`  - job_name: %s
    scheme: https
    metrics_path: /metrics
    tls_config:
      ca_file: %s
      server_name: %s
%s    static_configs:
      - targets: ["%s"]
`, name, filepath.Join(dir, "box.pem"), serverName, auth, u.Host)
	}
	bearer := func(file string) string {
		return "    authorization:\n      type: Bearer\n      credentials_file: " + filepath.Join(dir, file) + "\n"
	}
	cfg := "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" +
		job("edgepbx", bearer("token")) + job("edgepbx-no-token", "") + job("edgepbx-wrong-token", bearer("wrong-token"))
	writeFile(t, filepath.Join(dir, "prometheus.yml"), []byte(cfg))
	port := netnstest.FreePort(t, "tcp")
	p := &prometheusProc{base: fmt.Sprintf("http://127.0.0.1:%d", port), out: &strings.Builder{}}
	p.cmd = exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--log.level=warn")
	lw := lockedWriter{mu: &p.mu, b: p.out}
	p.cmd.Stdout, p.cmd.Stderr = lw, lw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("prometheus output:\n%s", p.out)
			p.mu.Unlock()
		}
	})
	return p
}

// lockedWriter collects Prometheus' stdout and stderr (two copying
// goroutines) into one buffer.
type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(b)
}

// api GETs a Prometheus API path and decodes its data; a refused or
// unreachable API (still starting) returns false.
func (p *prometheusProc) api(path string, data any) bool {
	resp, err := http.Get(p.base + path)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var ans struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if json.NewDecoder(resp.Body).Decode(&ans) != nil || ans.Status != "success" {
		return false
	}
	return json.Unmarshal(ans.Data, data) == nil
}

type promTarget struct {
	Labels    map[string]string `json:"labels"`
	Health    string            `json:"health"`
	LastError string            `json:"lastError"`
}

func (p *prometheusProc) targets() []promTarget {
	var d struct {
		Active []promTarget `json:"activeTargets"`
	}
	p.api("/api/v1/targets", &d)
	return d.Active
}

// waitTargets waits until each job's target has the wanted health.
func (p *prometheusProc) waitTargets(t *testing.T, want map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		got := map[string]string{}
		for _, tg := range p.targets() {
			got[tg.Labels["job"]] = tg.Health
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Prometheus targets %v, want %v", p.targets(), want)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (p *prometheusProc) targetError(t *testing.T, job string) string {
	for _, tg := range p.targets() {
		if tg.Labels["job"] == job {
			return tg.LastError
		}
	}
	t.Fatalf("no target for job %s", job)
	return ""
}

// query evaluates q now and returns the values of its series (sorted).
func (p *prometheusProc) query(t *testing.T, q string) []string {
	t.Helper()
	var d struct {
		Result []struct {
			Value [2]any `json:"value"`
		} `json:"result"`
	}
	if !p.api("/api/v1/query?query="+url.QueryEscape(q), &d) {
		t.Fatalf("Prometheus refused the query %q", q)
	}
	var out []string
	for _, r := range d.Result {
		out = append(out, fmt.Sprint(r.Value[1]))
	}
	slices.Sort(out)
	return out
}

func (p *prometheusProc) waitQuery(t *testing.T, q string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for len(p.query(t, q)) == 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("Prometheus: %s stayed empty", q)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
