package aggregator

import "github.com/prometheus/client_golang/prometheus"

// metrics never carry a tenant label.
type metrics struct {
	events          *prometheus.CounterVec
	late            prometheus.Counter
	cellsRefused    prometheus.Counter
	openWindows     prometheus.Gauge
	watermark       *prometheus.GaugeVec
	closedThrough   *prometheus.GaugeVec
	windowsClosed   prometheus.Counter
	windowsReleased prometheus.Counter
	cells           *prometheus.CounterVec
	refusals        *prometheus.CounterVec
	budgetEps       *prometheus.GaugeVec
	budgetDelta     *prometheus.GaugeVec
	writeErrors     *prometheus.CounterVec
	kafkaErrors     prometheus.Counter
	retrying        prometheus.Gauge
	assigned        prometheus.Gauge
	releaser        prometheus.Gauge
	draws           *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_aggregator_events_total",
			Help: "Messages the aggregator read, by outcome: added, duplicate (a retried event_id), rejected (by the event decision), not_tagged (no external_aggregate purpose), replayed (already counted before a restart), late.",
		}, []string{"outcome"}),
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_aggregator_late_events_total",
			Help: "Events that arrived after their window was closed (window end + allowed lateness): counted here, never added to a release.",
		}),
		cellsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_aggregator_tenant_cells_refused_total",
			Help: "Events not added to a cell because their tenant had opened aggregator.max_tenant_cells cells of that metric in the window already.",
		}),
		openWindows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shukei_aggregator_open_windows",
			Help: "Windows this instance is accumulating, summed over its partitions.",
		}),
		watermark: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shukei_aggregator_watermark_seconds",
			Help: "Event-time watermark of a partition (Unix seconds): the latest event time, or now when the partition is caught up.",
		}, []string{"partition"}),
		closedThrough: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shukei_aggregator_closed_through_seconds",
			Help: "Every window of the partition ending at or before this time (Unix seconds) is closed and its partials stored.",
		}, []string{"partition"}),
		windowsClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_aggregator_windows_closed_total",
			Help: "Windows closed by a partition (partials stored).",
		}),
		windowsReleased: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_aggregator_windows_released_total",
			Help: "Windows released (noise added, releases stored) by this instance's release step.",
		}),
		cells: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_aggregator_cells_total",
			Help: "Cells of released windows by metric and outcome: released, or suppressed by private partition selection.",
		}, []string{"metric", "outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_aggregator_release_refusals_total",
			Help: "Window releases refused, by reason (budget: the purpose's budget for the period would be overdrawn).",
		}, []string{"purpose", "reason"}),
		budgetEps: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shukei_budget_epsilon_remaining",
			Help: "ε left in the current period's budget of a purpose.",
		}, []string{"purpose"}),
		budgetDelta: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shukei_budget_delta_remaining",
			Help: "δ left in the current period's budget of a purpose.",
		}, []string{"purpose"}),
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_aggregator_clickhouse_errors_total",
			Help: "Failed ClickHouse reads and writes of the aggregator (each is retried with backoff), by operation.",
		}, []string{"what"}),
		kafkaErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shukei_aggregator_kafka_errors_total",
			Help: "Kafka errors of the aggregator (joining the group, reading, committing).",
		}),
		retrying: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shukei_aggregator_backpressure",
			Help: "1 while a write is being retried (nothing is read meanwhile), else 0.",
		}),
		assigned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shukei_aggregator_assigned_partitions",
			Help: "Partitions of the raw topic assigned to this instance.",
		}),
		releaser: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shukei_aggregator_is_releaser",
			Help: "1 if this instance holds partition 0 and runs the release step.",
		}),
		draws: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shukei_aggregator_release_draws_total",
			Help: "Releases this instance drew and wrote to the release log, by outcome: first (the window's one published draw) or discarded (another draw of the window came first; never published).",
		}, []string{"outcome"}),
	}
	m.draws.WithLabelValues("first")
	m.draws.WithLabelValues("discarded")
	// The refusal series exists from the start, so a dashboard shows 0 rather than no data.
	m.refusals.WithLabelValues(Purpose, "budget")
	reg.MustRegister(m.events, m.late, m.cellsRefused, m.openWindows, m.watermark, m.closedThrough, m.windowsClosed, m.windowsReleased,
		m.cells, m.refusals, m.budgetEps, m.budgetDelta, m.writeErrors, m.kafkaErrors, m.retrying, m.assigned, m.releaser, m.draws)
	return m
}
