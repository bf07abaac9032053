package phonehome

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are licensed's own Prometheus metrics, in a registry of its own
// (no global state), served at GET /admin/metrics behind the admin token.
type metrics struct {
	reg      *prometheus.Registry
	checkins *prometheus.CounterVec // by result: the licence status, or error / unavailable
	duration prometheus.Histogram
	flags    *prometheus.CounterVec // raised, by kind: clone, audit, rollback
	sessions *prometheus.CounterVec // TLS sessions: issued, resumed, unknown, store_error
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		checkins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "licensed_checkins_total",
			Help: "Check-ins answered, by result (licence status, or error / unavailable when none was signed)."}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "licensed_checkin_duration_seconds",
			Help: "Time to record and answer a check-in (database transaction and signature).", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		flags: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "licensed_flags_raised_total",
			Help: "Flags raised on a licence or box, by kind (clone, audit, rollback)."}, []string{"kind"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "licensed_tls_sessions_total",
			Help: "TLS session tickets: issued, resumed, unknown (full handshake instead), store_error."}, []string{"op"}),
	}
	m.reg.MustRegister(m.checkins, m.duration, m.flags, m.sessions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// events are what a check-in's transaction decided to log and count: they
// run only once it committed, so a transaction that is rolled back or
// retried never reports a flag twice or one that was not kept.
type events []func()

func (e *events) add(f func()) { *e = append(*e, f) }

func (e events) run() {
	for _, f := range e {
		f()
	}
}
