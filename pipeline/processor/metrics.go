package processor

import "github.com/prometheus/client_golang/prometheus"

// metrics never carry a tenant label.
type metrics struct {
	events          *prometheus.CounterVec
	skipped         prometheus.Counter
	batchSize       prometheus.Histogram
	batchSeconds    prometheus.Histogram
	writeErrors     *prometheus.CounterVec
	kafkaErrors     prometheus.Counter
	retrying        prometheus.Gauge
	assigned        prometheus.Gauge
	committed       *prometheus.GaugeVec
	dlq             *prometheus.CounterVec
	lag             *prometheus.GaugeVec
	stage           *prometheus.HistogramVec
	fenced          prometheus.Counter
	leaseExpired    prometheus.Counter
	martsRepaired   prometheus.Counter
	martsUnrepaired prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_events_total",
			Help: "Messages of the raw topic by outcome (stored, rejected) and rejection reason.",
		}, []string{"outcome", "reason"}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_dlq_events_total",
			Help: "Messages written to the DLQ topic, by rejection reason (suspected input data keeps no payload).",
		}, []string{"reason"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_processor_skipped_total",
			Help: "Messages skipped because the store already held them (redelivered after a crash or rebalance).",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shukei_processor_batch_size",
			Help:    "Messages per processed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shukei_processor_batch_seconds",
			Help:    "Time to decide and write one batch, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_clickhouse_insert_errors_total",
			Help: "Failed writes (ClickHouse inserts, DLQ writes) by what was written; each is retried.",
		}, []string{"what"}),
		kafkaErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_processor_kafka_errors_total",
			Help: "Kafka errors: joining the group, reading, committing.",
		}),
		retrying: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shukei_processor_backpressure",
			Help: "1 while a write is being retried and nothing is read or committed.",
		}),
		assigned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shukei_processor_assigned_partitions",
			Help: "Raw-topic partitions this instance owns.",
		}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_processor_fenced_batches_total",
			Help: "Batches abandoned and decided again because one of their tenants was deleted after they were decided.",
		}),
		leaseExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_processor_lease_refusals_total",
			Help: "Packets to ClickHouse not sent because no heartbeat of the instance's generation was accepted recently enough (a paused or partitioned instance): its batch is abandoned.",
		}),
		martsRepaired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_processor_marts_repaired_total",
			Help: "Purpose-mart row keys a batch cut short had left without its rows, inserted again when the processor resumed.",
		}),
		martsUnrepaired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_processor_marts_unrepaired_total",
			Help: "Purpose-mart row keys found differing from the event store when the processor resumed after a batch cut short, in a way the cut batch does not explain: re-derive them with 'shukei retention rebuild-marts'.",
		}),
		committed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shukei_processor_committed_offset",
			Help: "Last committed offset by partition.",
		}, []string{"partition"}),
	}
	m.lag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "shukei_processor_consumer_lag",
		Help: "Messages between the last one read and the partition's end, by partition.",
	}, []string{"partition"})
	m.stage = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "shukei_processor_stage_seconds",
		Help:    "Time a batch spends in each stage: decide, insert_events, write_dlq, insert_rejections.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	}, []string{"stage"})
	// The write-error series exist from the start, so dashboards and alerts see 0, not nothing.
	for _, what := range []string{"insert events", "write DLQ", "insert rejections"} {
		m.writeErrors.WithLabelValues(what)
	}
	reg.MustRegister(m.stage, m.events, m.skipped, m.batchSize, m.batchSeconds, m.writeErrors, m.kafkaErrors, m.retrying, m.fenced, m.leaseExpired, m.martsRepaired, m.martsUnrepaired, m.assigned, m.committed, m.lag, m.dlq)
	return m
}
