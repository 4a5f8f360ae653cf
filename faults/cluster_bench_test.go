//go:build cluster

package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
)

// BenchmarkShardInsert is the insert rate of one shard of the cluster (a replicated event store
// whose purpose views fill the shard's marts, the second replica fetching every part) against
// the single-node server in the same run: batches of 10,000 events of 50 tenants, the
// processor's insert. It reports events/s; README's sizing table divides by it.
//
//	go test -tags cluster -run XXX -bench ShardInsert -benchtime 20x ./faults/
func BenchmarkShardInsert(b *testing.B) {
	const batch = 10_000
	run := func(b *testing.B, conn driver.Conn, db string) {
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Second)
		b.ResetTimer()
		for i := range b.N {
			ins, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".events (event_id, tenant_id, occurred_at, ingested_at, category, purposes, feature_id, use_count, edition, kafka_partition, kafka_offset)")
			if err != nil {
				b.Fatal(err)
			}
			for j := range batch {
				if err := ins.Append(uuid.New(), fmt.Sprintf("tenant-%02d", j%50), now.Add(-time.Duration(j%3600)*time.Second), now, "feature_use",
					uint16(0xffff), fmt.Sprintf("feature-%d", j%40), uint32(1+j%4), "standard", uint16(j%6), uint64(i*batch+j)); err != nil {
					b.Fatal(err)
				}
			}
			if err := ins.Send(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
	}
	b.Run("one-server", func(b *testing.B) {
		conn, cfg := servicetest.ClickHouse(b)
		if _, err := migrations.Apply(context.Background(), conn, cfg.ClickHouse.Database); err != nil {
			b.Fatal(err)
		}
		run(b, conn, cfg.ClickHouse.Database)
	})
	b.Run("cluster-shard", func(b *testing.B) {
		conn := clusterConn(b, clusterCH[0])
		db := fmt.Sprintf("t_bench_%d", time.Now().UnixNano())
		b.Cleanup(func() { dropRunDatabases(b, db) })
		if _, err := migrations.ApplyLayout(context.Background(), conn, db, clusterLayout(b)); err != nil {
			b.Fatal(err)
		}
		run(b, conn, db)
	})
}
