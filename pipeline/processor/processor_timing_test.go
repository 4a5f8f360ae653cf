package processor

import (
	"context"
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
			"CREATE TABLE " + copyDB + ".raw_copy (ingested_at DateTime, kafka_partition UInt16, kafka_offset UInt64, payload String) ENGINE = MergeTree PARTITION BY toYYYYMM(ingested_at) ORDER BY (kafka_partition, kafka_offset)",
		} {
			if err := r.conn.Exec(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()

		run := func(raw bool, count string) float64 {
			r.cfg.Processor.GroupID += "x" // a fresh group each run
			p := r.processor(prometheus.NewRegistry())
			if raw {
				p.rawCopy, p.db = true, copyDB
			}
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- p.Run(runCtx) }()
			defer func() { cancel(); <-done }()
			var first time.Time
			for {
				var n uint64
				if err := r.conn.QueryRow(ctx, count).Scan(&n); err != nil {
					b.Fatal(err)
				}
				if n > 0 && first.IsZero() {
					first = time.Now()
				}
				if n >= uint64(w.total) {
					return float64(w.total) / time.Since(first).Seconds()
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		procRate := run(false, "SELECT (SELECT count() FROM "+r.db+".events) + (SELECT count() FROM "+r.db+".rejections WHERE class != 'checkpoint')")
		rawRate := run(true, "SELECT count() FROM "+copyDB+".raw_copy")
		b.ReportMetric(procRate, "processor_events/s")
		b.ReportMetric(rawRate, "raw_copy_events/s")
		b.ReportMetric(procRate/rawRate, "processor_vs_raw")
	}
}
