package admin

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
)

// GeoIP upload: the raw file as the body (DB-IP CSV or .csv.gz, GeoLite2
// country CSV zip), or a multipart form with one part named "file" (the
// security page). The parser in firmware/auth decides the format.

// GeoIPView is GET /api/v1/security/geoip.
type GeoIPView struct {
	Loaded bool            `json:"loaded"`
	Info   *auth.GeoIPInfo `json:"info,omitempty"`
}

func (s *Server) geoipView() GeoIPView {
	info, ok := s.auth.GeoIP()
	if !ok {
		return GeoIPView{}
	}
	return GeoIPView{Loaded: true, Info: &info}
}

func (s *Server) apiGeoIP(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	writeJSON(w, http.StatusOK, s.geoipView())
	return nil
}

// readGeoIPUpload returns the uploaded file's bytes, bounded.
func readGeoIPUpload(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return readUpload(w, r, auth.MaxGeoIPUpload)
}

// readUpload returns an uploaded file of at most limit bytes: the body,
// or the part named "file" of a multipart form (the pages' upload forms).
func readUpload(w http.ResponseWriter, r *http.Request, limit int) ([]byte, error) {
	r.Body = http.MaxBytesReader(w, r.Body, int64(limit)+64<<10)
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mt = "application/octet-stream"
	}
	var src io.Reader = r.Body
	if mt == "multipart/form-data" {
		if params["boundary"] == "" {
			return nil, fmt.Errorf("%w: multipart body without boundary", errBadRequest)
		}
		mr := multipart.NewReader(r.Body, params["boundary"])
		part, err := mr.NextPart()
		for err == nil && part.FormName() != "file" {
			part, err = mr.NextPart()
		}
		if err != nil {
			return nil, fmt.Errorf("%w: the form has no file part named \"file\"", errBadRequest)
		}
		src = part
	}
	data, err := io.ReadAll(io.LimitReader(src, int64(limit)+1))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) || len(data) > limit {
		return nil, fmt.Errorf("%w: upload larger than %d MiB", errBadRequest, limit>>20)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read upload: %v", errBadRequest, err)
	}
	return data, nil
}

func (s *Server) apiSetGeoIP(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	data, err := readGeoIPUpload(w, r)
	if err == nil {
		if _, err = s.auth.ImportGeoIP(p, src(r), data); errors.Is(err, auth.ErrGeoIP) {
			err = fmt.Errorf("%w: %w", errBadRequest, err)
		}
	}
	if err != nil {
		_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "security.geoip.upload", Outcome: audit.Failed, Detail: err.Error()})
		return err
	}
	v := s.geoipView()
	writeJSON(w, http.StatusOK, map[string]any{"status": "GeoIP database installed", "geoip": v})
	return nil
}

func (s *Server) apiDeleteGeoIP(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.auth.DeleteGeoIP(p, src(r)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "GeoIP database removed; logins compare networks only"})
	return nil
}
