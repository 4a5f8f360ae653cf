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
	}
	reg.MustRegister(m.requests, m.latency, m.rows, m.auditFailures)
	return m
}

func (m *metrics) observe(report, decision string, d time.Duration) {
	m.requests.WithLabelValues(report, decision).Inc()
	m.latency.WithLabelValues(report).Observe(d.Seconds())
}
