package collector

import "github.com/prometheus/client_golang/prometheus"

// metrics never carry a tenant label: tenant ids are data about customers, and their number is
// unbounded.
type metrics struct {
	requests    *prometheus.CounterVec
	events      *prometheus.CounterVec
	bytes       prometheus.Counter
	duration    prometheus.Histogram
	inFlight    prometheus.Gauge
	kafkaWrite  prometheus.Histogram
	kafkaErrors prometheus.Counter
	rateLimited prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_collector_requests_total",
			Help: "Ingest requests by HTTP status and error code (empty when the request was answered per event).",
		}, []string{"code", "error"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_collector_events_total",
			Help: "Events by outcome (accepted, rejected, retry) and reason.",
		}, []string{"outcome", "reason"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_collector_request_bytes_total",
			Help: "Request body bytes after decompression.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shukei_collector_request_duration_seconds",
			Help:    "Time to answer an ingest request, Kafka acknowledgement included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shukei_collector_in_flight_requests",
			Help: "Ingest requests being handled.",
		}),
		kafkaWrite: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shukei_collector_kafka_write_duration_seconds",
			Help:    "Time for Kafka to acknowledge a request's events (acks=all).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		kafkaErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_collector_kafka_write_errors_total",
			Help: "Kafka writes that failed; their events were answered as retry.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_collector_rate_limited_events_total",
			Help: "Events refused whole with their request (429) because their tenant was over collector.tenant_rate; the sender resends them.",
		}),
	}
	reg.MustRegister(m.requests, m.events, m.bytes, m.duration, m.inFlight, m.kafkaWrite, m.kafkaErrors, m.rateLimited)
	return m
}
