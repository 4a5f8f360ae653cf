package query

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	rows          *prometheus.CounterVec
	auditFailures prometheus.Counter

	unauthenticated prometheus.Counter
	overloaded      prometheus.Counter
	inFlight        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_query_requests_total",
			Help: "Query service requests by report and audit decision (allowed, denied, failed).",
		}, []string{"report", "decision"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shukei_query_request_duration_seconds",
			Help:    "Time to answer a request, audit append included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"report"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_query_rows_returned_total",
			Help: "Rows returned by reports.",
		}, []string{"report"}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_query_audit_failures_total",
			Help: "Requests refused because their audit record could not be written.",
		}),
		unauthenticated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_query_unauthenticated_total",
			Help: "Requests refused (401) without a valid token (none, malformed, unknown): answered from memory, audited once per query.unauthenticated_summary_every.",
		}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_query_over_max_in_flight_total",
			Help: "Requests of principals refused (503, Retry-After) because query.max_in_flight requests were being answered.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shukei_query_in_flight",
			Help: "Requests of principals being answered (at most query.max_in_flight).",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.rows, m.auditFailures, m.unauthenticated, m.overloaded, m.inFlight)
	return m
}

func (m *metrics) observe(report, decision string, d time.Duration) {
	m.requests.WithLabelValues(report, decision).Inc()
	m.latency.WithLabelValues(report).Observe(d.Seconds())
}
