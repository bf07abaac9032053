package auth

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// The optional GeoIP country database: the admin uploads a free CSV export
// (DB-IP "ip-to-country-lite" start,end,country; or MaxMind's
// GeoLite2-Country-CSV zip, blocks plus locations). It is parsed strictly,
// reduced to sorted range starts with a country each, stored in one store
// value (replaced atomically) and searched in memory by binary search.
//
// Table layout (one per address family): fixed-size records, sorted by
// start, each "start address | country (2 ASCII letters)". A record covers
// its start up to the next record's start; gaps in the source are records
// with country 0,0. Adjacent ranges of one country merge into one record.

// Upload and table bounds. The free country files have about 0.5 M (DB-IP)
// and 0.4 M (GeoLite2, both families) rows.
const (
	MaxGeoIPUpload = 64 << 20  // bytes of one upload, compressed or not
	maxGeoIPPlain  = 192 << 20 // bytes after decompression, all files together
	MaxGeoIPRows   = 2_000_000 // data rows in the upload
	maxGeoIPLine   = 1024      // bytes of one CSV line
	maxGeoNames    = 100_000   // MaxMind location rows
)

// ErrGeoIP wraps every reason an upload is refused.
var ErrGeoIP = errors.New("GeoIP database refused")

// GeoIP formats.
const (
	GeoFormatDBIP    = "dbip-csv"
	GeoFormatMaxMind = "geolite2-csv-zip"
)

// GeoIPInfo describes the stored database for the UI and API.
type GeoIPInfo struct {
	Format    string    `json:"format"`
	Uploaded  time.Time `json:"uploaded"`
	SHA256    string    `json:"sha256"` // of the upload as received
	Rows      int       `json:"rows"`   // data rows read
	Ranges4   int       `json:"ranges_v4"`
	Ranges6   int       `json:"ranges_v6"`
	Countries int       `json:"countries"`
	Bytes     int       `json:"table_bytes"` // size of both tables
}

// GeoDB is a parsed country database. Safe for concurrent lookups.
type GeoDB struct {
	Info GeoIPInfo `json:"info"`
	V4   []byte    `json:"v4"` // records of 4+2 bytes
	V6   []byte    `json:"v6"` // records of 16+2 bytes
}

const (
	rec4 = 4 + 2
	rec6 = 16 + 2
)

// Country returns the ISO 3166 alpha-2 code for a, or "" when unknown.
func (g *GeoDB) Country(a netip.Addr) string {
	if g == nil || !a.IsValid() {
		return ""
	}
	a = a.Unmap()
	var key []byte
	tab, size := g.V6, rec6
	if a.Is4() {
		b := a.As4()
		key, tab, size = b[:], g.V4, rec4
	} else {
		b := a.As16()
		key = b[:]
	}
	klen := size - 2
	// First record whose start is above a; the one before covers a.
	lo, hi := 0, len(tab)/size
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if bytes.Compare(tab[m*size:m*size+klen], key) > 0 {
			hi = m
		} else {
			lo = m + 1
		}
	}
	i := lo
	if i == 0 {
		return ""
	}
	cc := tab[(i-1)*size+klen : i*size]
	if cc[0] == 0 {
		return ""
	}
	return string(cc)
}

// validate checks a table read back from the store: whole records, strictly
// increasing starts, countries of two capital letters or the gap marker.
func (g *GeoDB) validate() error {
	for _, t := range []struct {
		tab  []byte
		size int
	}{{g.V4, rec4}, {g.V6, rec6}} {
		if len(t.tab)%t.size != 0 {
			return fmt.Errorf("%w: table of %d bytes is not whole records", ErrGeoIP, len(t.tab))
		}
		klen := t.size - 2
		for off := 0; off < len(t.tab); off += t.size {
			if off > 0 && bytes.Compare(t.tab[off-t.size:off-2], t.tab[off:off+klen]) >= 0 {
				return fmt.Errorf("%w: table not sorted", ErrGeoIP)
			}
			cc := t.tab[off+klen : off+t.size]
			if !(cc[0] == 0 && cc[1] == 0) && !validCountry(string(cc)) {
				return fmt.Errorf("%w: bad country in table", ErrGeoIP)
			}
		}
	}
	return nil
}

func validCountry(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// geoRange is one parsed source row.
type geoRange struct {
	start, end netip.Addr
	cc         string // "" for unknown (DB-IP "ZZ", MaxMind rows without a country)
}

// ParseGeoIP reads an upload: a MaxMind GeoLite2-Country-CSV zip, or a
// DB-IP country CSV, plain or gzip-compressed. Anything else, any bad row,
// overlapping ranges or exceeded bounds refuse the whole upload.
func ParseGeoIP(data []byte, now time.Time) (*GeoDB, error) {
	return parseGeoIP(data, now, geoLimits{plain: maxGeoIPPlain, rows: MaxGeoIPRows})
}

// geoLimits are the decompressed-byte and row budgets of one upload.
type geoLimits struct {
	plain int64
	rows  int
}

// parseGeoIP is ParseGeoIP with the budgets as a parameter.
func parseGeoIP(data []byte, now time.Time, lim geoLimits) (*GeoDB, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty upload", ErrGeoIP)
	}
	if len(data) > MaxGeoIPUpload {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrGeoIP, len(data), MaxGeoIPUpload)
	}
	sum := sha256.Sum256(data)
	var ranges []geoRange
	var rows int
	var format string
	var err error
	switch {
	case bytes.HasPrefix(data, []byte("PK\x03\x04")):
		format = GeoFormatMaxMind
		ranges, rows, err = parseGeoLite2Zip(data, lim)
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		format = GeoFormatDBIP
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrGeoIP, err)
		}
		zr.Multistream(false)
		ranges, rows, err = parseDBIP(zr, lim)
	default:
		format = GeoFormatDBIP
		ranges, rows, err = parseDBIP(bytes.NewReader(data), lim)
	}
	if err != nil {
		return nil, err
	}
	g, err := buildGeoDB(ranges)
	if err != nil {
		return nil, err
	}
	g.Info.Format, g.Info.Uploaded, g.Info.SHA256, g.Info.Rows = format, now.UTC(), hex.EncodeToString(sum[:]), rows
	return g, nil
}

// csvLines reads a CSV stream with bounded lines, rows and total size.
type csvLines struct {
	r     *csv.Reader
	line  int
	limit *countingReader
}

type countingReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, fmt.Errorf("%w: more than %d bytes of CSV", ErrGeoIP, c.max)
	}
	return n, err
}

// lineLimitReader fails on a line longer than maxGeoIPLine, so a file
// without newlines cannot make the CSV reader buffer it whole.
type lineLimitReader struct {
	r   *bufio.Reader
	cur int
}

func (l *lineLimitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for rest := p[:n]; ; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			l.cur += len(rest)
		} else {
			l.cur += i
		}
		if l.cur > maxGeoIPLine {
			return 0, fmt.Errorf("%w: a line is longer than %d bytes", ErrGeoIP, maxGeoIPLine)
		}
		if i < 0 {
			break
		}
		l.cur, rest = 0, rest[i+1:]
	}
	return n, err
}

func newCSVLines(r io.Reader, budget *countingReader, fields int) *csvLines {
	budget.r = r
	cr := csv.NewReader(&lineLimitReader{r: bufio.NewReader(budget)})
	cr.FieldsPerRecord = fields
	cr.ReuseRecord = true
	return &csvLines{r: cr, limit: budget}
}

func (c *csvLines) next() ([]string, error) {
	rec, err := c.r.Read()
	if err == io.EOF {
		return nil, io.EOF
	}
	c.line++
	if err != nil {
		if errors.Is(err, ErrGeoIP) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: line %d: %v", ErrGeoIP, c.line, err)
	}
	return rec, nil
}

func parseDBIP(r io.Reader, lim geoLimits) ([]geoRange, int, error) {
	c := newCSVLines(r, &countingReader{max: lim.plain}, 3)
	var out []geoRange
	for {
		rec, err := c.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if c.line == 1 && strings.Contains(err.Error(), "wrong number of fields") {
				return nil, 0, fmt.Errorf("%w: not a DB-IP country CSV (start,end,country); for MaxMind upload the GeoLite2-Country-CSV zip (blocks and locations together)", ErrGeoIP)
			}
			return nil, 0, err
		}
		if len(out) == lim.rows {
			return nil, 0, fmt.Errorf("%w: more than %d rows", ErrGeoIP, lim.rows)
		}
		if c.line == 1 && strings.TrimPrefix(rec[0], "\ufeff") == "network" {
			return nil, 0, fmt.Errorf("%w: this is a MaxMind Blocks file; upload the GeoLite2-Country-CSV zip (blocks and locations together)", ErrGeoIP)
		}
		start, err1 := netip.ParseAddr(rec[0])
		end, err2 := netip.ParseAddr(rec[1])
		if err1 != nil || err2 != nil || start.Zone() != "" || end.Zone() != "" {
			return nil, 0, fmt.Errorf("%w: line %d: start and end must be IP addresses (DB-IP format start,end,country)", ErrGeoIP, c.line)
		}
		cc, err := countryField(rec[2], c.line)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, geoRange{start: start, end: end, cc: cc})
	}
	if len(out) == 0 {
		return nil, 0, fmt.Errorf("%w: no rows", ErrGeoIP)
	}
	return out, len(out), nil
}

func countryField(s string, line int) (string, error) {
	switch {
	case s == "ZZ" || s == "":
		return "", nil
	case validCountry(s):
		return s, nil
	}
	return "", fmt.Errorf("%w: line %d: country %.8q is not a two-letter code", ErrGeoIP, line, s)
}

// parseGeoLite2Zip reads GeoLite2-Country-Blocks-IPv4.csv, -IPv6.csv and
// -Locations-en.csv from MaxMind's zip (other files are ignored).
func parseGeoLite2Zip(data []byte, lim geoLimits) ([]geoRange, int, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: zip: %v", ErrGeoIP, err)
	}
	if len(zr.File) > 64 {
		return nil, 0, fmt.Errorf("%w: zip holds %d files (a GeoLite2 country zip has about 12)", ErrGeoIP, len(zr.File))
	}
	var blocks []*zip.File
	var locs *zip.File
	for _, f := range zr.File {
		base := path.Base(f.Name)
		switch {
		case strings.HasSuffix(base, "-Country-Blocks-IPv4.csv"), strings.HasSuffix(base, "-Country-Blocks-IPv6.csv"):
			blocks = append(blocks, f)
		case strings.HasSuffix(base, "-Country-Locations-en.csv"):
			locs = f
		}
	}
	if locs == nil || len(blocks) == 0 {
		return nil, 0, fmt.Errorf("%w: the zip must hold GeoLite2-Country-Locations-en.csv and GeoLite2-Country-Blocks-IPv4.csv and/or -IPv6.csv", ErrGeoIP)
	}
	// One budget for all files together: a zip bomb stops at maxGeoIPPlain.
	budget := &countingReader{max: lim.plain}
	names, err := readZipped(locs, func(r io.Reader) (map[string]string, error) { return parseGeoNames(r, budget) })
	if err != nil {
		return nil, 0, err
	}
	var out []geoRange
	rows := 0
	for _, f := range blocks {
		n, err := readZipped(f, func(r io.Reader) (int, error) { return parseGeoBlocks(r, budget, lim.rows, names, &out) })
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", path.Base(f.Name), err)
		}
		rows += n
	}
	if len(out) == 0 {
		return nil, 0, fmt.Errorf("%w: no blocks", ErrGeoIP)
	}
	return out, rows, nil
}

func readZipped[T any](f *zip.File, fn func(io.Reader) (T, error)) (T, error) {
	var zero T
	if f.Method != zip.Store && f.Method != zip.Deflate {
		return zero, fmt.Errorf("%w: %s: unsupported compression", ErrGeoIP, path.Base(f.Name))
	}
	rc, err := f.Open()
	if err != nil {
		return zero, fmt.Errorf("%w: %s: %v", ErrGeoIP, path.Base(f.Name), err)
	}
	defer rc.Close()
	return fn(rc)
}

// header checks a CSV header's leading columns.
func header(rec []string, want ...string) bool {
	if len(rec) < len(want) {
		return false
	}
	for i, w := range want {
		if strings.TrimPrefix(rec[i], "\ufeff") != w {
			return false
		}
	}
	return true
}

// parseGeoNames maps geoname_id to country_iso_code.
func parseGeoNames(r io.Reader, budget *countingReader) (map[string]string, error) {
	c := newCSVLines(r, budget, -1)
	rec, err := c.next()
	if err != nil || !header(rec, "geoname_id", "locale_code", "continent_code", "continent_name", "country_iso_code") {
		return nil, fmt.Errorf("%w: Locations file: unexpected header (want geoname_id,locale_code,continent_code,continent_name,country_iso_code,...)", ErrGeoIP)
	}
	cols := len(rec)
	names := map[string]string{}
	for {
		rec, err := c.next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		if len(rec) != cols {
			return nil, fmt.Errorf("%w: Locations line %d: %d fields, want %d", ErrGeoIP, c.line, len(rec), cols)
		}
		if len(names) == maxGeoNames {
			return nil, fmt.Errorf("%w: more than %d locations", ErrGeoIP, maxGeoNames)
		}
		if _, err := strconv.ParseUint(rec[0], 10, 32); err != nil {
			return nil, fmt.Errorf("%w: Locations line %d: geoname_id %.12q", ErrGeoIP, c.line, rec[0])
		}
		cc, err := countryField(rec[4], c.line)
		if err != nil {
			return nil, err
		}
		names[rec[0]] = cc
	}
}

// parseGeoBlocks appends one Blocks file's networks to out; the country is
// the geoname_id's, else the registered country's.
func parseGeoBlocks(r io.Reader, budget *countingReader, maxRows int, names map[string]string, out *[]geoRange) (int, error) {
	c := newCSVLines(r, budget, -1)
	rec, err := c.next()
	if err != nil || !header(rec, "network", "geoname_id", "registered_country_geoname_id") {
		return 0, fmt.Errorf("%w: Blocks file: unexpected header (want network,geoname_id,registered_country_geoname_id,...)", ErrGeoIP)
	}
	cols := len(rec)
	rows := 0
	for {
		rec, err := c.next()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			return 0, err
		}
		if len(rec) != cols {
			return 0, fmt.Errorf("%w: line %d: %d fields, want %d", ErrGeoIP, c.line, len(rec), cols)
		}
		if len(*out) == maxRows {
			return 0, fmt.Errorf("%w: more than %d rows", ErrGeoIP, maxRows)
		}
		pfx, err := netip.ParsePrefix(rec[0])
		if err != nil || pfx != pfx.Masked() {
			return 0, fmt.Errorf("%w: line %d: network %.50q is not a CIDR prefix", ErrGeoIP, c.line, rec[0])
		}
		cc := ""
		for _, id := range rec[1:3] {
			if id == "" {
				continue
			}
			var ok bool
			if cc, ok = names[id]; !ok {
				return 0, fmt.Errorf("%w: line %d: geoname_id %.12q not in the Locations file", ErrGeoIP, c.line, id)
			}
			break
		}
		*out = append(*out, geoRange{start: pfx.Addr(), end: lastAddr(pfx), cc: cc})
		rows++
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// buildGeoDB sorts the ranges, refuses overlaps, and writes the tables.
func buildGeoDB(ranges []geoRange) (*GeoDB, error) {
	g := &GeoDB{}
	var v4, v6 []geoRange
	for _, r := range ranges {
		if r.start.Is4() != r.end.Is4() || r.start.Is4In6() != r.end.Is4In6() {
			return nil, fmt.Errorf("%w: range %s-%s mixes address families", ErrGeoIP, r.start, r.end)
		}
		if r.end.Less(r.start) {
			return nil, fmt.Errorf("%w: range %s-%s ends before it starts", ErrGeoIP, r.start, r.end)
		}
		if r.start.Is4() {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	countries := map[string]bool{}
	var err error
	if g.V4, err = table(v4, countries); err != nil {
		return nil, err
	}
	if g.V6, err = table(v6, countries); err != nil {
		return nil, err
	}
	g.Info.Ranges4, g.Info.Ranges6 = len(g.V4)/rec4, len(g.V6)/rec6
	g.Info.Countries, g.Info.Bytes = len(countries), len(g.V4)+len(g.V6)
	return g, nil
}

func table(rs []geoRange, countries map[string]bool) ([]byte, error) {
	slices.SortFunc(rs, func(a, b geoRange) int { return a.start.Compare(b.start) })
	var out []byte
	lastCC := "-" // nothing written yet
	put := func(a netip.Addr, cc string) {
		if cc == lastCC {
			return // same country continues: no new record
		}
		out = append(out, a.AsSlice()...)
		if cc == "" {
			out = append(out, 0, 0)
		} else {
			out = append(out, cc...)
			countries[cc] = true
		}
		lastCC = cc
	}
	var prevEnd netip.Addr
	for i, r := range rs {
		if i > 0 {
			if !prevEnd.Less(r.start) {
				return nil, fmt.Errorf("%w: ranges overlap at %s", ErrGeoIP, r.start)
			}
			if prevEnd.Next() != r.start {
				put(prevEnd.Next(), "") // a gap: unknown
			}
		}
		put(r.start, r.cc)
		prevEnd = r.end
	}
	if len(rs) > 0 && prevEnd.Next().IsValid() {
		put(prevEnd.Next(), "")
	}
	return out, nil
}

// bGeoIP holds the one stored database under key "db".
const bGeoIP = "auth.geoip"

// loadGeoIP reads the stored database at start; a damaged one is dropped
// from memory (logins go on without countries) and reported.
func (s *Service) loadGeoIP() error {
	var g GeoDB
	var ok bool
	err := s.db.View(func(tx *store.Tx) error {
		var err error
		ok, err = tx.Get(bGeoIP, "db", &g)
		return err
	})
	if err == nil && ok {
		err = g.validate()
	}
	if err != nil {
		return fmt.Errorf("auth: stored GeoIP database: %w", err)
	}
	if ok {
		s.geo.Store(&g)
	}
	return nil
}

// GeoIP describes the database in use, if any.
func (s *Service) GeoIP() (GeoIPInfo, bool) {
	g := s.geo.Load()
	if g == nil {
		return GeoIPInfo{}, false
	}
	return g.Info, true
}

// Country looks a client address up in the database ("" without one).
func (s *Service) Country(a netip.Addr) string { return s.geo.Load().Country(a) }

// SetGeoIP stores g in place of the previous database, in one transaction
// with its audit entry, and then uses it for new logins.
func (s *Service) SetGeoIP(actor Principal, source string, g *GeoDB) error {
	if g == nil {
		return fmt.Errorf("%w: nothing to store", ErrGeoIP)
	}
	s.geoMu.Lock()
	defer s.geoMu.Unlock()
	before, had := s.GeoIP()
	err := s.db.Update(func(tx *store.Tx) error {
		if err := tx.Put(bGeoIP, "db", g); err != nil {
			return err
		}
		ev := audit.Event{Actor: actor.Actor(), Source: source, Action: "security.geoip.upload", After: g.Info}
		if had {
			ev.Before = before
		}
		return s.audit.RecordTx(tx, ev)
	})
	if err != nil {
		return fmt.Errorf("auth: store GeoIP database: %w", err)
	}
	s.geo.Store(g)
	return nil
}

// ImportGeoIP parses an upload and stores it (SetGeoIP). One import runs at
// a time, so parallel uploads cannot multiply the parser's memory: a second
// one gets ErrBusy.
func (s *Service) ImportGeoIP(actor Principal, source string, data []byte) (GeoIPInfo, error) {
	if !s.geoImport.TryLock() {
		return GeoIPInfo{}, fmt.Errorf("another GeoIP upload is being processed: %w", ErrBusy)
	}
	defer s.geoImport.Unlock()
	g, err := ParseGeoIP(data, s.clock.Now())
	if err != nil {
		return GeoIPInfo{}, err
	}
	if err := s.SetGeoIP(actor, source, g); err != nil {
		return GeoIPInfo{}, err
	}
	return g.Info, nil
}

// DeleteGeoIP removes the database; logins go back to networks only.
func (s *Service) DeleteGeoIP(actor Principal, source string) error {
	s.geoMu.Lock()
	defer s.geoMu.Unlock()
	before, had := s.GeoIP()
	if !had {
		return fmt.Errorf("GeoIP database: %w", ErrNotFound)
	}
	err := s.db.Update(func(tx *store.Tx) error {
		if err := tx.Delete(bGeoIP, "db"); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: source, Action: "security.geoip.delete", Before: before})
	})
	if err != nil {
		return fmt.Errorf("auth: delete GeoIP database: %w", err)
	}
	s.geo.Store(nil)
	return nil
}
