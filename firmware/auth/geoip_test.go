package auth

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
)

var geoNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const adminTestPW = "tr7#Kq2!vm9Lw"

// dbipSample is in DB-IP's ip-to-country-lite layout: IPv4 then IPv6 rows,
// "ZZ" for unassigned space.
const dbipSample = `0.0.0.0,0.255.255.255,ZZ
1.0.0.0,1.0.0.255,AU
1.0.1.0,1.0.3.255,CN
1.0.4.0,1.0.7.255,AU
1.0.8.0,1.0.15.255,CN
192.0.2.0,192.0.2.255,DE
198.51.100.0,198.51.100.255,FR
203.0.113.0,203.0.113.127,JP
2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,NL
2a00::,2a00:0fff:ffff:ffff:ffff:ffff:ffff:ffff,GB
`

const mmLocations = "geoname_id,locale_code,continent_code,continent_name,country_iso_code,country_name,is_in_european_union\n" +
	"2921044,en,EU,Europe,DE,Germany,1\n" +
	"3017382,en,EU,Europe,FR,France,1\n" +
	"6255148,en,EU,Europe,,,0\n"

const mmBlocks4 = "network,geoname_id,registered_country_geoname_id,represented_country_geoname_id,is_anonymous_proxy,is_satellite_provider,is_anycast\n" +
	"192.0.2.0/25,2921044,2921044,,0,0,\n" +
	"192.0.2.128/25,,3017382,,0,0,\n" +
	"198.51.100.0/24,6255148,6255148,,0,0,\n"

const mmBlocks6 = "network,geoname_id,registered_country_geoname_id,represented_country_geoname_id,is_anonymous_proxy,is_satellite_provider,is_anycast\n" +
	"2001:db8::/32,3017382,3017382,,0,0,\n"

func zipOf(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipOf(s string) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(s))
	zw.Close()
	return buf.Bytes()
}

func TestGeoIPLookup(t *testing.T) {
	mm := zipOf(t, map[string]string{
		"GeoLite2-Country-CSV_20260224/GeoLite2-Country-Locations-en.csv": mmLocations,
		"GeoLite2-Country-CSV_20260224/GeoLite2-Country-Locations-de.csv": "ignored",
		"GeoLite2-Country-CSV_20260224/GeoLite2-Country-Blocks-IPv4.csv":  mmBlocks4,
		"GeoLite2-Country-CSV_20260224/GeoLite2-Country-Blocks-IPv6.csv":  mmBlocks6,
		"GeoLite2-Country-CSV_20260224/LICENSE.txt":                       "terms",
	})
	uploads := []struct {
		name, format string
		data         []byte
		want         map[string]string
	}{
		{"dbip", GeoFormatDBIP, []byte(dbipSample), map[string]string{
			"0.1.2.3": "", "1.0.0.0": "AU", "1.0.0.255": "AU", "1.0.1.0": "CN", "1.0.5.9": "AU", "1.0.15.255": "CN",
			"1.0.16.0": "", "192.0.2.77": "DE", "::ffff:192.0.2.1": "DE", "198.51.100.1": "FR", "203.0.113.127": "JP",
			"203.0.113.128": "", "255.255.255.255": "", "2001:db8::1": "NL", "2001:db9::": "", "2a00:abc::1": "GB",
			"::1": "", "ffff::": "",
		}},
		{"dbip gzip", GeoFormatDBIP, gzipOf(dbipSample), map[string]string{"1.0.0.7": "AU", "2001:db8:1::": "NL"}},
		{"geolite2", GeoFormatMaxMind, mm, map[string]string{
			"192.0.2.1": "DE", "192.0.2.200": "FR", "198.51.100.9": "", "192.0.3.0": "", "2001:db8::5": "FR", "10.0.0.1": "",
		}},
	}
	for _, u := range uploads {
		t.Run(u.name, func(t *testing.T) {
			g, err := ParseGeoIP(u.data, geoNow)
			if err != nil {
				t.Fatal(err)
			}
			if g.Info.Format != u.format || g.Info.Rows == 0 || g.validate() != nil {
				t.Fatalf("info %+v, validate %v", g.Info, g.validate())
			}
			for ip, want := range u.want {
				if got := g.Country(netip.MustParseAddr(ip)); got != want {
					t.Errorf("Country(%s) = %q, want %q", ip, got, want)
				}
			}
		})
	}
	var none *GeoDB
	if none.Country(netip.MustParseAddr("1.0.0.1")) != "" {
		t.Error("nil database answers a country")
	}
}

func TestGeoIPMergesAdjacentRanges(t *testing.T) {
	g, err := ParseGeoIP([]byte("10.0.0.0,10.0.0.255,DE\n10.0.1.0,10.0.1.255,DE\n10.0.2.0,10.0.2.255,FR\n"), geoNow)
	if err != nil {
		t.Fatal(err)
	}
	// DE (merged), FR, and the unknown tail after 10.0.2.255.
	if g.Info.Ranges4 != 3 || len(g.V4) != 3*rec4 || g.Info.Countries != 2 {
		t.Fatalf("table: %+v, %d bytes", g.Info, len(g.V4))
	}
}

func TestGeoIPRefused(t *testing.T) {
	mmNoLoc := zipOf(t, map[string]string{"GeoLite2-Country-Blocks-IPv4.csv": mmBlocks4})
	mmBadID := zipOf(t, map[string]string{"GeoLite2-Country-Locations-en.csv": mmLocations,
		"GeoLite2-Country-Blocks-IPv4.csv": strings.Replace(mmBlocks4, "2921044,2921044", "999,999", 1)})
	mmBadCIDR := zipOf(t, map[string]string{"GeoLite2-Country-Locations-en.csv": mmLocations,
		"GeoLite2-Country-Blocks-IPv4.csv": strings.Replace(mmBlocks4, "192.0.2.0/25", "192.0.2.1/25", 1)})
	mmOverlap := zipOf(t, map[string]string{"GeoLite2-Country-Locations-en.csv": mmLocations,
		"GeoLite2-Country-Blocks-IPv4.csv": mmBlocks4 + "192.0.2.0/24,2921044,2921044,,0,0,\n"})
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty upload"},
		{"too big", make([]byte, MaxGeoIPUpload+1), "max"},
		{"maxmind blocks alone", []byte(mmBlocks4), "GeoLite2-Country-CSV zip"},
		{"bad address", []byte("1.0.0.x,1.0.0.255,AU\n"), "line 1: start and end must be IP addresses"},
		{"zone", []byte("fe80::1%eth0,fe80::2,AU\n"), "line 1"},
		{"bad country", []byte("1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.255,Australia\n"), "line 2: country"},
		{"lower-case country", []byte("1.0.0.0,1.0.0.255,au\n"), "country"},
		{"reversed", []byte("1.0.0.255,1.0.0.0,AU\n"), "ends before it starts"},
		{"mixed families", []byte("1.0.0.0,2001:db8::,AU\n"), "mixes address families"},
		{"overlap", []byte("1.0.0.0,1.0.0.255,AU\n1.0.0.128,1.0.1.0,CN\n"), "overlap"},
		{"long line", []byte("1.0.0.0,1.0.0.255," + strings.Repeat("A", 2000) + "\n"), "longer than"},
		{"binary", []byte("\x00\x01\x02,\xff,\n"), "line 1"},
		{"short row", []byte("1.0.0.0,1.0.0.255,AU\n1.0.1.0,CN\n"), "line 2"},
		{"bad gzip", []byte{0x1f, 0x8b, 0, 0}, "gzip"},
		{"bad zip", []byte("PK\x03\x04garbage"), "zip"},
		{"zip without locations", mmNoLoc, "Locations-en.csv"},
		{"unknown geoname", mmBadID, "not in the Locations file"},
		{"host bits in network", mmBadCIDR, "not a CIDR prefix"},
		{"maxmind overlap", mmOverlap, "overlap"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseGeoIP(tc.data, geoNow)
			if !errors.Is(err, ErrGeoIP) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrGeoIP with %q", err, tc.want)
			}
		})
	}
}

func TestGeoIPRowBound(t *testing.T) {
	// The production bound is MaxGeoIPRows; the same code at 1000 rows.
	lim := geoLimits{plain: maxGeoIPPlain, rows: 1000}
	var b strings.Builder
	for i := 0; i <= lim.rows; i++ {
		fmt.Fprintf(&b, "10.%d.%d.0,10.%d.%d.255,DE\n", i>>8&255, i&255, i>>8&255, i&255)
	}
	mmRows := mmBlocks4
	for i := 0; i <= lim.rows; i++ {
		mmRows += fmt.Sprintf("10.%d.%d.0/24,2921044,2921044,,0,0,\n", i>>8&255, i&255)
	}
	for name, data := range map[string][]byte{"dbip": []byte(b.String()), "geolite2": zipOf(t, map[string]string{
		"GeoLite2-Country-Locations-en.csv": mmLocations, "GeoLite2-Country-Blocks-IPv4.csv": mmRows})} {
		if _, err := parseGeoIP(data, geoNow, lim); !errors.Is(err, ErrGeoIP) || !strings.Contains(err.Error(), "more than 1000 rows") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestGeoIPZipBomb(t *testing.T) {
	// Same code path as the 192 MiB production budget, at 4 MiB.
	// Highly compressible rows far beyond the decompressed budget.
	row := "network,geoname_id,registered_country_geoname_id\n"
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("GeoLite2-Country-Locations-en.csv")
	w.Write([]byte(mmLocations))
	w, _ = zw.Create("GeoLite2-Country-Blocks-IPv4.csv")
	w.Write([]byte(row))
	// Empty lines: the CSV reader skips them, so only the byte budget stops it.
	chunk := bytes.Repeat([]byte("\n"), 1<<20)
	for n := 0; n < 5; n++ {
		w.Write(chunk)
	}
	zw.Close()
	_, err := parseGeoIP(buf.Bytes(), geoNow, geoLimits{plain: 4 << 20, rows: MaxGeoIPRows})
	if !errors.Is(err, ErrGeoIP) || !strings.Contains(err.Error(), "bytes of CSV") {
		t.Fatalf("err = %v", err)
	}
	if _, err := parseGeoIP(gzipOf(strings.Repeat("\n", 5<<20)), geoNow, geoLimits{plain: 4 << 20, rows: MaxGeoIPRows}); !errors.Is(err, ErrGeoIP) {
		t.Fatalf("gzip bomb: %v", err)
	}
}

// enrolTOTP gives root1 a second factor and returns its secret.
func enrolTOTP(t *testing.T, s *Service) string {
	t.Helper()
	p := Principal{Username: "root1"}
	e, err := s.BeginTOTP(context.Background(), p, Client{}, Proof{Password: adminTestPW})
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totpCode(e.Secret, s.clock.Now())
	if _, err := s.ConfirmTOTP(p, "", code); err != nil {
		t.Fatal(err)
	}
	return e.Secret
}

func TestStepUpNewCountry(t *testing.T) {
	s, clk := newService(t)
	ctx := context.Background()
	home := Client{Addr: netip.MustParseAddr("192.0.2.10")}
	if _, err := s.Claim(ctx, home, "AAAA-BBBB-CCCC", "root1", adminTestPW); err != nil {
		t.Fatal(err)
	}
	secret := enrolTOTP(t, s)
	g, err := ParseGeoIP([]byte(dbipSample), clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetGeoIP(Principal{Username: "root1"}, "192.0.2.10", g); err != nil {
		t.Fatal(err)
	}
	login := func(c Client) LoginResult {
		t.Helper()
		clk.Advance(time.Minute)
		res, err := s.Login(ctx, c, "root1", adminTestPW)
		if err != nil {
			t.Fatal(err)
		}
		if res.Challenge != "" {
			clk.Advance(time.Minute)
			code, _ := totpCode(secret, clk.Now())
			fin, err := s.LoginSecondFactor(ctx, c, res.Challenge, code)
			if err != nil || fin.Session == nil {
				t.Fatalf("second factor: %v", err)
			}
			fin.Challenge = res.Challenge
			return fin
		}
		return res
	}
	steps := []struct {
		addr       string
		stepUp     bool
		country    string
		newCountry bool
	}{
		// Home network, first login with the database: DE is new for the account.
		{"192.0.2.20", true, "DE", true},
		{"192.0.2.30", false, "DE", false},
		// New network, new country.
		{"1.0.0.9", true, "AU", true},
		// Known network (1.0.0.0/24 now seen) and country.
		{"1.0.0.200", false, "AU", false},
		// New network, new country.
		{"198.51.100.4", true, "FR", true},
		// New network in a country already used (AU: 1.0.4.0/24 is another /24).
		{"1.0.4.1", true, "AU", false},
		// No country for this address: networks only.
		{"1.0.16.1", true, "", false},
	}
	for _, st := range steps {
		res := login(Client{Addr: netip.MustParseAddr(st.addr)})
		if (res.Challenge != "") != st.stepUp || res.Country != st.country || res.NewCountry != st.newCountry {
			t.Fatalf("%s: challenge %v country %q new %v; want step-up %v, %q, %v", st.addr, res.Challenge != "",
				res.Country, res.NewCountry, st.stepUp, st.country, st.newCountry)
		}
	}
	h, err := s.History("root1", 0)
	if err != nil {
		t.Fatal(err)
	}
	var sawFR bool
	for _, e := range h {
		sawFR = sawFR || (e.Country == "FR" && e.NewCountry && e.NewLocation)
	}
	if !sawFR {
		t.Errorf("history lacks the new country FR: %+v", h)
	}
	es, _ := s.audit.Query(audit.Filter{Action: "auth.login", Outcome: audit.OK})
	if len(es) == 0 || !strings.Contains(es[len(es)-1].Detail, "from a new network 1.0.16.0/24") {
		t.Fatalf("audit: %+v", es)
	}
	var sawCountry bool
	for _, e := range es {
		sawCountry = sawCountry || strings.Contains(e.Detail, "from a new country FR")
	}
	if !sawCountry {
		t.Error("audit lacks the new country")
	}

	// The database persists (a new Service loads it) and goes away with Delete.
	s2, err := New(Config{DB: s.db, Clock: clk, Audit: s.audit, Hasher: s.hasher, SetupCode: SetupCode("x"), Logger: s.log})
	if err != nil {
		t.Fatal(err)
	}
	if info, ok := s2.GeoIP(); !ok || info.SHA256 != g.Info.SHA256 || s2.Country(netip.MustParseAddr("1.0.0.1")) != "AU" {
		t.Fatalf("reloaded: %+v %v", info, ok)
	}
	if err := s2.DeleteGeoIP(Principal{Username: "root1"}, ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := s2.GeoIP(); ok || s2.DeleteGeoIP(Principal{Username: "root1"}, "") == nil {
		t.Fatal("delete did not remove the database")
	}
	if err := s2.loadGeoIP(); err != nil || s2.geo.Load() != nil {
		t.Fatalf("deleted database still stored: %v", err)
	}
}

func TestGeoIPDamagedStoreIgnored(t *testing.T) {
	s, clk := newService(t)
	bad := GeoDB{V4: []byte{1, 2, 3}}
	if err := s.db.Update(func(tx *store.Tx) error { return tx.Put(bGeoIP, "db", bad) }); err != nil {
		t.Fatal(err)
	}
	if err := s.loadGeoIP(); !errors.Is(err, ErrGeoIP) {
		t.Fatalf("damaged table loaded: %v", err)
	}
	if _, err := New(Config{DB: s.db, Clock: clk, Audit: s.audit, Hasher: s.hasher, SetupCode: SetupCode("x"), Logger: s.log}); err != nil {
		t.Fatalf("a damaged GeoIP table must not stop the service: %v", err)
	}
}

// BenchmarkGeoIPLookup measures one lookup in a table the size of the free
// country files (about 300 k IPv4 and 150 k IPv6 records).
func BenchmarkGeoIPLookup(b *testing.B) {
	g := syntheticGeoDB(b, 300_000, 150_000)
	addrs := []netip.Addr{netip.MustParseAddr("100.64.3.7"), netip.MustParseAddr("2a00:1450:4001::1"), netip.MustParseAddr("8.8.8.8")}
	i := 0
	for b.Loop() {
		g.Country(addrs[i%len(addrs)])
		i++
	}
	b.ReportMetric(float64(len(g.V4))/float64(g.Info.Ranges4), "B/range4")
	b.ReportMetric(float64(len(g.V6))/float64(g.Info.Ranges6), "B/range6")
	b.ReportMetric(float64(g.Info.Ranges4+g.Info.Ranges6), "ranges")
	stored, err := json.Marshal(g) // as tx.Put writes it
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(stored))/float64(g.Info.Ranges4+g.Info.Ranges6), "stored-B/range")
}

// BenchmarkGeoIPParse parses a DB-IP style CSV of 300 k IPv4 rows.
func BenchmarkGeoIPParse(b *testing.B) {
	var sb strings.Builder
	for i := 0; i < 300_000; i++ {
		cc := string([]byte{'A' + byte(i%26), 'A' + byte(i/26%26)})
		fmt.Fprintf(&sb, "%d.%d.%d.0,%d.%d.%d.255,%s\n", 1+i>>16, i>>8&255, i&255, 1+i>>16, i>>8&255, i&255, cc)
	}
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseGeoIP(data, geoNow); err != nil {
			b.Fatal(err)
		}
	}
}

func syntheticGeoDB(tb testing.TB, n4, n6 int) *GeoDB {
	tb.Helper()
	var rs []geoRange
	for i := 0; i < n4; i++ {
		a := netip.AddrFrom4([4]byte{byte(i >> 14), byte(i >> 6), byte(i << 2), 0})
		e := netip.AddrFrom4([4]byte{byte(i >> 14), byte(i >> 6), byte(i<<2) | 3, 255})
		rs = append(rs, geoRange{start: a, end: e, cc: string([]byte{'A' + byte(i%26), 'A' + byte(i/26%26)})})
	}
	for i := 0; i < n6; i++ {
		var s, e [16]byte
		s[0], s[1], s[2], s[3] = 0x20, byte(i>>16), byte(i>>8), byte(i)
		e = s
		for j := 4; j < 16; j++ {
			e[j] = 0xff
		}
		rs = append(rs, geoRange{start: netip.AddrFrom16(s), end: netip.AddrFrom16(e), cc: string([]byte{'A' + byte(i%26), 'B'})})
	}
	g, err := buildGeoDB(rs)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// FuzzParseGeoIP: any upload either is refused with ErrGeoIP or yields a
// table that validates and answers lookups without panicking.
func FuzzParseGeoIP(f *testing.F) {
	f.Add([]byte(dbipSample))
	f.Add(gzipOf(dbipSample))
	f.Add(zipOf(f, map[string]string{"GeoLite2-Country-Locations-en.csv": mmLocations,
		"GeoLite2-Country-Blocks-IPv4.csv": mmBlocks4, "GeoLite2-Country-Blocks-IPv6.csv": mmBlocks6}))
	f.Add([]byte("1.0.0.0,1.0.0.255,AU\n1.0.0.128,1.0.1.0,CN\n"))
	f.Add([]byte("::,::ffff:ffff,ZZ\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGeoIP(data, geoNow)
		if err != nil {
			if !errors.Is(err, ErrGeoIP) {
				t.Fatalf("error without ErrGeoIP: %v", err)
			}
			return
		}
		if err := g.validate(); err != nil {
			t.Fatalf("accepted table does not validate: %v", err)
		}
		for _, a := range []string{"0.0.0.0", "1.0.0.1", "255.255.255.255", "::", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
			if cc := g.Country(netip.MustParseAddr(a)); cc != "" && !validCountry(cc) {
				t.Fatalf("Country(%s) = %q", a, cc)
			}
		}
	})
}

func TestImportGeoIPOneAtATime(t *testing.T) {
	s, _ := newService(t)
	admin := Principal{Username: "root1"}
	s.geoImport.Lock() // an upload in progress
	if _, err := s.ImportGeoIP(admin, "", []byte(dbipSample)); !errors.Is(err, ErrBusy) {
		t.Fatalf("parallel import: %v", err)
	}
	s.geoImport.Unlock()
	info, err := s.ImportGeoIP(admin, "", []byte(dbipSample))
	if err != nil || info.Countries != 7 {
		t.Fatalf("import: %+v %v", info, err)
	}
	if _, err := s.ImportGeoIP(admin, "", []byte("x")); !errors.Is(err, ErrGeoIP) {
		t.Fatalf("bad import: %v", err)
	}
	if got, _ := s.GeoIP(); got.SHA256 != info.SHA256 {
		t.Fatal("a refused import replaced the database")
	}
}
