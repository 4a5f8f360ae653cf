package processor

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkProcessorVsRawCopy measures the processor's throughput on the real services beside
// a raw copy (the same consumer, batches and ClickHouse insert, no decision) over the same
// topic in the same run, and reports both and their ratio. Run with -benchtime=1x: an
// iteration is a whole pipeline run over 200,000 events. The clock runs from the first row
// written to the last, so joining the consumer group is not counted against either.
func BenchmarkProcessorVsRawCopy(b *testing.B) {
	for range b.N {
		b.StopTimer()
		r := newRig(b, 12)
		w := produce(b, r, 200000)
		ctx := context.Background()
		// The copy keeps its own checkpoints in a database of its own (dropped with the
		// test's databases, being named <db>_rawcopy).
		copyDB := r.db + "_rawcopy"
		for _, q := range []string{
			"CREATE DATABASE " + copyDB,
			"CREATE TABLE " + copyDB + ".rejections AS " + r.db + ".rejections",
			"CREATE TABLE " + copyDB + ".events AS " + r.db + ".events", // stays empty; read at resume
			"CREATE TABLE " + copyDB + ".raw_copy (ingested_at DateTime, kafka_partition UInt16, kafka_offset UInt64, payload String) ENGINE = MergeTree PARTITION BY toYYYYMM(ingested_at) ORDER BY (kafka_partition, kafka_offset)",
		} {
			if err := r.conn.Exec(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		if os.Getenv("SHUKEI_TEST_BENCH_NO_MARTS") != "" { // to see what the marts cost
			for _, mv := range []string{"_support.trace_mv", "_service_improvement.feature_daily_mv", "_marketing.activity_daily_mv", "_follow_up.tenant_daily_mv", "_interview_selection.tenant_daily_mv", "_external_consented.tenant_daily_mv"} {
				if err := r.conn.Exec(ctx, "DROP TABLE "+r.db+mv); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StartTimer()

		stages := prometheus.NewRegistry()
		run := func(raw bool, count string) float64 {
			r.cfg.Processor.GroupID += "x" // a fresh group each run
			reg := prometheus.NewRegistry()
			if !raw {
				reg = stages
			}
			p := r.processor(reg)
			if raw {
				p.rawCopy, p.db = true, copyDB
			}
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- p.Run(runCtx) }()
			defer func() { cancel(); <-done }()
			// As 'shukei bench pipeline' times it: rows after the first write, over the time
			// since that write (counting the first write's rows too would flatter both sides by
			// a batch).
			var first time.Time
			var firstN uint64
			for {
				var n uint64
				if err := r.conn.QueryRow(ctx, count).Scan(&n); err != nil {
					b.Fatal(err)
				}
				if n > 0 && first.IsZero() {
					first, firstN = time.Now(), n
				}
				if n >= uint64(w.total) {
					return float64(n-firstN) / time.Since(first).Seconds()
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		procRate := run(false, "SELECT (SELECT count() FROM "+r.db+".events) + (SELECT count() FROM "+r.db+".rejections WHERE class != 'checkpoint')")
		rawRate := run(true, "SELECT count() FROM "+copyDB+".raw_copy")
		// Where the processor's time goes, per event, by stage.
		families, _ := stages.Gather()
		for _, f := range families {
			if f.GetName() != "shukei_processor_stage_seconds" {
				continue
			}
			for _, m := range f.GetMetric() {
				b.ReportMetric(m.GetHistogram().GetSampleSum()/float64(w.total)*1e6, m.GetLabel()[0].GetValue()+"_us/event")
			}
		}
		b.ReportMetric(procRate, "processor_events/s")
		b.ReportMetric(rawRate, "raw_copy_events/s")
		b.ReportMetric(procRate/rawRate, "processor_vs_raw")
	}
}
