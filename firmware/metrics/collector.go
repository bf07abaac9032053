package metrics

import (
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/media"
)

// The owners whose counters the collector reads at scrape time; each is
// the owning package's own type behind the smallest interface.
type (
	// SIP is the SIP edge (*sipedge.Server): counters by security-chain
	// stage ("stage_outcome" keys), bans and throttles in force.
	SIP interface {
		Counters() map[string]uint64
		BlockCounts() (bans, throttles int)
	}
	// Registrar is the edge's location service (*sipedge.Location).
	Registrar interface {
		Count(now time.Time) (users, bindings int)
	}
	// Calls is the B2BUA (*call.B2BUA).
	Calls interface {
		Active() int
		Counters() call.Counters
	}
	// Media is the RTP relay (*media.Relay).
	Media interface{ Totals() media.Totals }
	// Logins is the admin account service (*auth.Service).
	Logins interface{ LoginCounts() auth.LoginCounts }
	// Licence is the phone-home manager (*license.Manager).
	Licence interface{ State() license.State }
	// Certificates is the TLS certificate manager (*certs.Manager).
	Certificates interface{ Current() certs.Info }
)

// Sources are what the collector reads. A nil field is a part the box does
// not run (calls disabled, no licence server): its metrics are absent.
type Sources struct {
	SIP       SIP
	Registrar Registrar
	Calls     Calls
	Media     Media
	Logins    Logins
	Licence   Licence
	// LicenceConfigured is false when no licence server is configured
	// (development boxes): edgepbx_license_configured 0.
	LicenceConfigured bool
	Certificates      Certificates
	// StorePath is the bbolt file whose size is reported.
	StorePath string
	Version   string
	Now       func() time.Time // default time.Now
}

// NewRegistry is the box's registry: the edgepbx collector over src, the
// Go runtime and process collectors. There is no global registry.
func NewRegistry(src Sources) (*prometheus.Registry, error) {
	if src.Now == nil {
		src.Now = time.Now
	}
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		&collector{src: src},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("edgepbx_"+name, help, labels, nil)
}

// The exported metrics. Names and labels are a contract with the Zabbix
// template and the Grafana dashboard in docs/monitoring (checked by tests).
var (
	dBuild          = desc("build_info", "Firmware version of the box (value 1).", "version")
	dSIPEvents      = desc("sip_events_total", "SIP edge outcomes by security-chain stage (filter, validate, policy, auth, guard, conn, retrans, udp, stateful).", "stage", "outcome")
	dRegUsers       = desc("sip_registered_extensions", "Extensions with at least one live registration.")
	dRegBindings    = desc("sip_registered_contacts", "Live registered contacts (bindings).")
	dBans           = desc("sip_bans_active", "SIP edge bans in force (a source cut off).")
	dThrottles      = desc("sip_throttles_active", "SIP edge throttles in force (a source stopped from one extension).")
	dCallsActive    = desc("calls_active", "Calls in progress (ringing or connected).")
	dCallsTotal     = desc("calls_total", "Calls set up since start.")
	dCallOutcomes   = desc("call_outcomes_total", "Call outcomes since start.", "outcome")
	dMediaCalls     = desc("media_calls", "Calls the RTP relay serves now.")
	dMediaPackets   = desc("media_packets_total", "RTP/RTCP packets relayed, by direction.", "direction")
	dMediaBytes     = desc("media_received_bytes_total", "Bytes of media received.")
	dMediaDropped   = desc("media_dropped_packets_total", "Media packets dropped, by reason.", "reason")
	dMediaWriteErr  = desc("media_write_errors_total", "Media packets the relay failed to send.")
	dMediaDTLS      = desc("media_dtls_handshakes_total", "DTLS handshakes, by result.", "result")
	dMediaLoss      = desc("media_reported_loss_ratio", "Fraction lost reported by the peers in RTCP reception reports (sum and count of reports).")
	dLogins         = desc("admin_logins_total", "Admin UI/API logins, by outcome.", "outcome")
	dLockouts       = desc("admin_lockouts_total", "Accounts locked for a source network after failed logins.")
	dLicConfigured  = desc("license_configured", "1 when a licence server is configured.")
	dLicMode        = desc("license_mode", "Licence mode: 1 for the mode in force (full, warning, degraded).", "mode")
	dLicDegraded    = desc("license_degraded", "1 while the licence state degrades service (emergency calls only).")
	dLicDaysOffline = desc("license_days_offline", "Days since the last good licence check-in.")
	dCertExpiry     = desc("certificate_expiry_seconds", "Seconds until the admin/SIP TLS certificate in use expires (negative: expired).")
	dStoreSize      = desc("store_size_bytes", "Size of the configuration and log store file.")
)

var allDescs = []*prometheus.Desc{dBuild, dSIPEvents, dRegUsers, dRegBindings, dBans, dThrottles, dCallsActive,
	dCallsTotal, dCallOutcomes, dMediaCalls, dMediaPackets, dMediaBytes, dMediaDropped, dMediaWriteErr, dMediaDTLS,
	dMediaLoss, dLogins, dLockouts, dLicConfigured, dLicMode, dLicDegraded, dLicDaysOffline, dCertExpiry, dStoreSize}

// collector reads every source at scrape time; it keeps no counts.
type collector struct{ src Sources }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	s := c.src
	now := s.Now()
	gauge(dBuild, 1, s.Version)
	if s.SIP != nil {
		for k, v := range s.SIP.Counters() {
			stage, outcome, ok := strings.Cut(k, "_")
			if !ok {
				stage, outcome = k, "total"
			}
			counter(dSIPEvents, v, stage, outcome)
		}
		bans, throttles := s.SIP.BlockCounts()
		gauge(dBans, float64(bans))
		gauge(dThrottles, float64(throttles))
	}
	if s.Registrar != nil {
		users, bindings := s.Registrar.Count(now)
		gauge(dRegUsers, float64(users))
		gauge(dRegBindings, float64(bindings))
	}
	if s.Calls != nil {
		gauge(dCallsActive, float64(s.Calls.Active()))
		cc := s.Calls.Counters()
		counter(dCallsTotal, cc.Calls)
		for _, o := range []struct {
			name string
			v    uint64
		}{{"answered", cc.Answered}, {"rejected", cc.Rejected}, {"overload", cc.Overload}, {"cancelled", cc.Cancelled},
			{"session_timeout", cc.SessionTimeouts}, {"transferred", cc.Transfers}, {"replace_denied", cc.ReplaceDenied}} {
			counter(dCallOutcomes, o.v, o.name)
		}
	}
	if s.Media != nil {
		t := s.Media.Totals()
		gauge(dMediaCalls, float64(t.Calls))
		counter(dMediaPackets, t.Received, "received")
		counter(dMediaPackets, t.Sent, "sent")
		counter(dMediaBytes, t.Bytes)
		counter(dMediaDropped, t.DroppedSource, "wrong_source")
		counter(dMediaDropped, t.DroppedCrypto, "crypto")
		counter(dMediaDropped, t.DroppedMalformed, "malformed")
		counter(dMediaDropped, t.DroppedNoPeer, "no_peer")
		counter(dMediaWriteErr, t.WriteErrors)
		counter(dMediaDTLS, t.Handshakes-min(t.Handshakes, t.HandshakeFailures), "ok")
		counter(dMediaDTLS, t.HandshakeFailures, "failed")
		ch <- prometheus.MustNewConstSummary(dMediaLoss, uint64(t.Reports), t.LossSum, nil)
	}
	if s.Logins != nil {
		l := s.Logins.LoginCounts()
		counter(dLogins, l.OK, "ok")
		counter(dLogins, l.Failed, "failed")
		counter(dLockouts, l.Lockouts)
	}
	gauge(dLicConfigured, b2f(s.LicenceConfigured))
	if s.Licence != nil {
		st := s.Licence.State()
		for _, m := range []license.Mode{license.ModeFull, license.ModeWarning, license.ModeDegraded} {
			gauge(dLicMode, b2f(st.Mode == m), string(m))
		}
		gauge(dLicDegraded, b2f(st.Mode == license.ModeDegraded))
		gauge(dLicDaysOffline, float64(st.DaysOffline))
	}
	if s.Certificates != nil {
		if na := s.Certificates.Current().NotAfter; !na.IsZero() {
			gauge(dCertExpiry, na.Sub(now).Seconds())
		}
	}
	if s.StorePath != "" {
		if fi, err := os.Stat(s.StorePath); err == nil {
			gauge(dStoreSize, float64(fi.Size()))
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
