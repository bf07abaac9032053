package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/provision"
)

// Phones is the provisioning service (*provision.Service): phone records,
// the asking list, settings, vendor CAs and firmware files.
type Phones interface {
	List() ([]provision.Device, error)
	Get(mac string) (provision.Device, error)
	Add(req provision.AddRequest, actor, source string) (provision.Device, error)
	Approve(mac, actor, source string) (provision.Device, error)
	Reprovision(mac, actor, source string) (provision.Device, error)
	Assign(mac string, exts []string, actor, source string) (provision.Device, error)
	Revoke(mac, actor, source string) (provision.Device, error)
	Delete(mac, actor, source string) error
	Enrolment(mac string) (provision.Enrolment, error)
	Asking() []provision.Asking
	Fetches() []provision.Fetch
	UnderAttack() bool
	ProvisioningURLs() (https, bootstrap string)
	Settings() provision.Settings
	SetSettings(st provision.Settings, actor, source string) error
	SetVendorCA(v provision.Vendor, pem []byte, actor, source string) error
	UploadFirmware(ctx context.Context, meta provision.FirmwareMeta, r io.Reader, actor, source string) (provision.Firmware, error)
	FirmwareList() ([]provision.Firmware, error)
	DeleteFirmware(id, actor, source string) error
	DHCPStatus() provision.DHCPStatus
	PnPStats() provision.PnPStats
}

// ZeroTouchView is the answer of GET /api/v1/phones/zerotouch.
type ZeroTouchView struct {
	DHCP provision.DHCPStatus `json:"dhcp"`
	PnP  provision.PnPStats   `json:"pnp"`
}

// PhonesView is the answer of GET /api/v1/phones.
type PhonesView struct {
	Phones []provision.Device `json:"phones"`
	// Asking are unknown MACs that asked for a configuration (bounded list).
	Asking []provision.Asking `json:"asking"`
	// UnderAttack: many MACs were refused lately; enrolment by MAC alone is
	// closed (one-time URL and factory certificates still work).
	UnderAttack bool   `json:"under_attack"`
	HTTPSURL    string `json:"https_url"`
	// BootstrapURL is plain HTTP: the CA and the HTTPS address, no secret.
	BootstrapURL string               `json:"bootstrap_url"`
	DHCP         []DHCPHint           `json:"dhcp"`
	Settings     provision.Settings   `json:"settings"`
	Firmware     []provision.Firmware `json:"firmware"`
	Vendors      []provision.Vendor   `json:"vendors"`
	// DHCPServer is the built-in DHCP server's state (off, probing,
	// running, refused, failed) and leases.
	DHCPServer provision.DHCPStatus `json:"dhcp_server"`
	// Unavailable is for the page: provisioning is not running.
	Unavailable bool `json:"-"`
}

// DHCPHint is one line of the zero-touch guidance.
type DHCPHint struct {
	Option string `json:"option"`
	Value  string `json:"value"`
	Note   string `json:"note"`
}

// PhoneExtensionsRequest is the body of PUT /api/v1/phones/{mac}/extensions.
type PhoneExtensionsRequest struct {
	Extensions []string `json:"extensions"`
}

// VendorCARequest is the body of PUT /api/v1/phones/vendor-ca.
type VendorCARequest struct {
	Vendor provision.Vendor `json:"vendor"`
	PEM    string           `json:"pem"`
}

var errNoPhones = fmt.Errorf("%w: provisioning is not running", errUnavailable)

func (s *Server) phonesView() (PhonesView, error) {
	if s.phones == nil {
		return PhonesView{}, errNoPhones
	}
	list, err := s.phones.List()
	if err != nil {
		return PhonesView{}, err
	}
	fw, err := s.phones.FirmwareList()
	if err != nil {
		return PhonesView{}, err
	}
	https, boot := s.phones.ProvisioningURLs()
	return PhonesView{Phones: list, Asking: s.phones.Asking(), UnderAttack: s.phones.UnderAttack(), HTTPSURL: https, BootstrapURL: boot,
		Settings: s.phones.Settings(), Firmware: fw, Vendors: provision.Vendors(), DHCPServer: s.phones.DHCPStatus(),
		DHCP: []DHCPHint{
			{"66 (TFTP server name)", boot, "every vendor; the phone fetches its bootstrap here, then moves to HTTPS"},
			{"160 / 159", boot, "Cisco MPP, Panasonic"},
			{"43 (vendor specific)", boot, "Yealink, Grandstream, Snom, Fanvil accept the URL in option 43"},
			{"none of 150, 128-254", "", "not needed; hand out nothing else from the phones' DHCP"},
		}}, nil
}

func (s *Server) phonesData(r *http.Request, p auth.Principal) (any, error) {
	v, err := s.phonesView()
	if errors.Is(err, errNoPhones) {
		return PhonesView{Unavailable: true}, nil
	}
	return v, err
}

func (s *Server) apiPhones(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	v, err := s.phonesView()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// phoneError maps provisioning errors to problem answers naming the field.
func phoneError(err error) error {
	var fe *provision.FieldError
	switch {
	case errors.As(err, &fe):
		if errors.Is(err, provision.ErrExists) {
			return fmt.Errorf("%w: %w", errConflict, err)
		}
		return &fieldProblem{field: fe.Field, err: err}
	case errors.Is(err, provision.ErrNotFound):
		return fmt.Errorf("%w: %w", errNotFound, err)
	case errors.Is(err, provision.ErrDegraded), errors.Is(err, provision.ErrBadState), errors.Is(err, provision.ErrTooMany):
		return fmt.Errorf("%w: %w", errConflict, err)
	}
	return err
}

// fieldProblem is a 422 naming the refused field.
type fieldProblem struct {
	field string
	err   error
}

func (f *fieldProblem) Error() string { return f.err.Error() }
func (f *fieldProblem) Unwrap() error { return f.err }

func (s *Server) phoneAnswer(w http.ResponseWriter, status int, d provision.Device, err error) error {
	if err != nil {
		var fp *fieldProblem
		if err = phoneError(err); errors.As(err, &fp) {
			telephonyProblem(w, http.StatusUnprocessableEntity, "phone refused", fp.Error(), fp.field)
			return nil
		}
		return err
	}
	writeJSON(w, status, d)
	return nil
}

func (s *Server) apiAddPhone(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	var req provision.AddRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	d, err := s.phones.Add(req, p.Actor(), src(r))
	return s.phoneAnswer(w, http.StatusCreated, d, err)
}

func (s *Server) apiPhone(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	d, err := s.phones.Get(r.PathValue("mac"))
	return s.phoneAnswer(w, http.StatusOK, d, err)
}

func (s *Server) phoneAction(act func(mac, actor, source string) (provision.Device, error)) func(http.ResponseWriter, *http.Request, auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
		if s.phones == nil {
			return errNoPhones
		}
		d, err := act(r.PathValue("mac"), p.Actor(), src(r))
		return s.phoneAnswer(w, http.StatusOK, d, err)
	}
}

func (s *Server) apiPhoneApprove(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	return s.phoneAction(s.phones.Approve)(w, r, p)
}

func (s *Server) apiPhoneReprovision(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	return s.phoneAction(s.phones.Reprovision)(w, r, p)
}

func (s *Server) apiPhoneRevoke(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	return s.phoneAction(s.phones.Revoke)(w, r, p)
}

func (s *Server) apiPhoneExtensions(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	var req PhoneExtensionsRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	d, err := s.phones.Assign(r.PathValue("mac"), req.Extensions, p.Actor(), src(r))
	return s.phoneAnswer(w, http.StatusOK, d, err)
}

func (s *Server) apiDeletePhone(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	if err := s.phones.Delete(r.PathValue("mac"), p.Actor(), src(r)); err != nil {
		return phoneError(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

func (s *Server) apiPhoneEnrolment(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	e, err := s.phones.Enrolment(r.PathValue("mac"))
	if err != nil {
		return phoneError(err)
	}
	writeJSON(w, http.StatusOK, e)
	return nil
}

// apiPhoneQR is the enrolment card's QR code (SVG, made here): the
// one-time URL while it can be used, else the HTTPS provisioning URL.
func (s *Server) apiPhoneQR(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	e, err := s.phones.Enrolment(r.PathValue("mac"))
	if err != nil {
		return phoneError(err)
	}
	text := e.URL
	if text == "" {
		text, _ = s.phones.ProvisioningURLs()
	}
	svg, err := provision.QRSVG(text)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	_, err = w.Write(svg)
	return err
}

func (s *Server) phoneCardData(r *http.Request, p auth.Principal) (any, error) {
	if s.phones == nil {
		return nil, errNoPhones
	}
	e, err := s.phones.Enrolment(r.PathValue("mac"))
	if err != nil {
		return nil, phoneError(err)
	}
	https, boot := s.phones.ProvisioningURLs()
	return map[string]any{"E": e, "HTTPS": https, "Boot": boot}, nil
}

func (s *Server) apiPhoneFetches(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	writeJSON(w, http.StatusOK, s.phones.Fetches())
	return nil
}

func (s *Server) apiPhoneZeroTouch(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	writeJSON(w, http.StatusOK, ZeroTouchView{DHCP: s.phones.DHCPStatus(), PnP: s.phones.PnPStats()})
	return nil
}

func (s *Server) apiPhoneSettings(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	writeJSON(w, http.StatusOK, s.phones.Settings())
	return nil
}

func (s *Server) apiSetPhoneSettings(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	var st provision.Settings
	if err := decodeJSON(r, &st); err != nil {
		return err
	}
	if err := s.phones.SetSettings(st, p.Actor(), src(r)); err != nil {
		return s.phoneAnswer(w, 0, provision.Device{}, err)
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// apiSetPhoneDHCP changes only the DHCP server's settings (the Phones
// page's form), keeping the other provisioning settings.
func (s *Server) apiSetPhoneDHCP(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	var d provision.DHCPSettings
	if err := decodeJSON(r, &d); err != nil {
		return err
	}
	st := s.phones.Settings()
	st.DHCP = d
	if err := s.phones.SetSettings(st, p.Actor(), src(r)); err != nil {
		return s.phoneAnswer(w, 0, provision.Device{}, err)
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) apiSetVendorCA(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	var req VendorCARequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := s.phones.SetVendorCA(req.Vendor, []byte(req.PEM), p.Actor(), src(r)); err != nil {
		return s.phoneAnswer(w, 0, provision.Device{}, err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "stored"})
	return nil
}

// apiUploadFirmware streams the body (application/octet-stream) to disk;
// metadata comes in the query: name, vendor, models (comma-separated), version.
func (s *Server) apiUploadFirmware(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
		return fmt.Errorf("%w: Content-Type must be application/octet-stream", errBadRequest)
	}
	q := r.URL.Query()
	meta, err := provision.ParseFirmwareMeta(q.Get("name"), q.Get("vendor"), q.Get("models"), q.Get("version"))
	if err != nil {
		return s.phoneAnswer(w, 0, provision.Device{}, err)
	}
	f, err := s.phones.UploadFirmware(r.Context(), meta, r.Body, p.Actor(), src(r))
	if err != nil {
		return s.phoneAnswer(w, 0, provision.Device{}, err)
	}
	writeJSON(w, http.StatusCreated, f)
	return nil
}

func (s *Server) apiFirmwareList(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	l, err := s.phones.FirmwareList()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, l)
	return nil
}

func (s *Server) apiDeleteFirmware(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.phones == nil {
		return errNoPhones
	}
	if err := s.phones.DeleteFirmware(r.PathValue("id"), p.Actor(), src(r)); err != nil {
		return s.phoneAnswer(w, 0, provision.Device{}, err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}
