package aggregator

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/topic"
	"github.com/shukei/shukei/policy"
)

var sealSeq atomic.Int64

// storeUses stores one feature use event for each tenant straight into the event store (the
// marts follow through their views), for service_improvement and marketing.
func storeUses(t *testing.T, conn driver.Conn, db string, tenants []string, feature string, at time.Time, uses uint32) {
	t.Helper()
	b, err := conn.PrepareBatch(context.Background(), "INSERT INTO "+db+".events (event_id, tenant_id, occurred_at, ingested_at, category, schema_version, source, user_pseudonym, contract_status, edition, size_band, purposes, policy_version, feature_id, use_count)")
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range tenants {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", sealSeq.Add(1))
		if err := b.Append(id, tn, at, time.Now(), "feature_use", uint8(1), "seal-test", fmt.Sprintf("%-16.16s", tn+":u"), "contracted", "standard", "m",
			uint16(1<<policy.ServiceImprovement|1<<policy.Marketing), uint16(1), feature, uses); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i+1)
	}
	return out
}

// TestSealOnce: a week is sealed once, after seal_after, with only atoms of at least k
// tenants; a second sealer that computed the week too (after more events arrived) loses to the
// first seal in the release log, and the materialised atoms — what reports and dashboards
// read — are the first seal's, never changing.
func TestSealOnce(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	cfg.Kafka.ReleaseTopic = servicetest.Topic(t, cfg.Kafka.Brokers, 1)
	db := cfg.ClickHouse.Database
	ctx := context.Background()
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	week := gate.Monday(now).AddDate(0, 0, -7) // the last complete week
	storeUses(t, conn, db, names("t", 5), "board", week.Add(50*time.Hour), 3)
	storeUses(t, conn, db, []string{"lone"}, "chat", week.Add(50*time.Hour), 7)

	newS := func(after time.Duration, reg *prometheus.Registry) *Sealer {
		if reg == nil {
			reg = prometheus.NewRegistry()
		}
		return newSealer(conn, db, newReleaseLog(cfg.Kafka.Brokers, topic.ReleaseSpec(cfg.Kafka), db), 5, after, reg, nil, time.Now)
	}
	// Not due yet: the week ended less than seal_after ago. The gate.Before weeks before the
	// first data are, and are sealed empty.
	early := newS(now.Sub(week.AddDate(0, 0, 7))+time.Hour, nil)
	got, err := early.SealDue(ctx)
	if err != nil || len(got) != 2*gate.Before {
		t.Fatalf("sealed %d weeks (%v), want the %d empty ones before the data", len(got), err, 2*gate.Before)
	}
	for _, sl := range got {
		if !sl.Week.Before(week) || len(sl.Atoms) != 0 {
			t.Errorf("sealed before seal_after or not empty: %s %s %d atoms", sl.Purpose, sl.Week, len(sl.Atoms))
		}
	}
	early.Close()

	// B computes the week (from the store as it is now) but is paused before publishing.
	b := newS(0, nil)
	defer b.Close()
	if err := b.rlog.sync(ctx); err != nil {
		t.Fatal(err)
	}
	atomsB, err := gate.Compute(ctx, conn, db, "", "service_improvement", week, 5)
	if err != nil {
		t.Fatal(err)
	}
	// Meanwhile a late event arrives, and A seals every due week and publishes first.
	storeUses(t, conn, db, []string{"t1"}, "board", week.Add(60*time.Hour), 100)
	reg := prometheus.NewRegistry()
	a := newS(0, reg)
	defer a.Close()
	sealed, err := a.SealDue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The week, for both purposes.
	if len(sealed) != 2 || !sealed[0].Week.Equal(week) {
		t.Fatalf("A sealed %v, want the week of %s for both purposes", sealed, week)
	}
	if n := testutil.ToFloat64(a.sealed.WithLabelValues("service_improvement")); n != 1 {
		t.Errorf("weeks sealed metric %v", n)
	}
	read := func() gate.Atoms {
		t.Helper()
		at, err := gate.Read(ctx, conn, gate.DB(db, "service_improvement"), week, week, 5)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	first := read()
	board := func(at gate.Atoms) (gate.Atom, bool) {
		for _, x := range at.List {
			if x.Feature == "board" {
				return x, true
			}
		}
		return gate.Atom{}, false
	}
	got1, ok := board(first)
	if !ok || got1.Tenants != 5 || got1.Uses != 3*4+103 || got1.Users != 5 {
		t.Fatalf("board atom %+v (want 5 tenants, 115 uses)", got1)
	}
	for _, x := range first.List {
		if x.Feature == "chat" || x.Tenants < 5 {
			t.Errorf("an atom under k was sealed: %+v", x)
		}
	}

	// B resumes and publishes its own computation: it loses, and nothing readable changes.
	sl := &gate.Seal{Purpose: "service_improvement", Week: week, K: 5, ID: "zombie", At: time.Now(), Atoms: atomsB}
	if err := b.rlog.append(ctx, &releaseRecord{Database: db, Kind: recordSeal, Seal: sl}); err != nil {
		t.Fatal(err)
	}
	if err := b.rlog.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if won, _ := b.rlog.sealed("service_improvement", week); won == nil || won.ID == "zombie" {
		t.Fatalf("the zombie's seal won: %+v", won)
	}
	// Even a materialiser that wrote the zombie's rows by mistake would have to go through
	// SealDue, which writes only first seals; running every sealer again changes nothing.
	for _, s := range []*Sealer{a, b, newS(0, nil)} {
		if got, err := s.SealDue(ctx); err != nil || len(got) != 0 {
			t.Fatalf("a later pass sealed again: %v %v", got, err)
		}
	}
	if again, _ := board(read()); again != got1 {
		t.Errorf("the sealed atom changed: %+v, then %+v", got1, again)
	}
	// A reader whose k is larger than the seal's (query.k above the policy's) gets only the
	// atoms of at least its k.
	if at, err := gate.Read(ctx, conn, gate.DB(db, "service_improvement"), week, week, 6); err != nil {
		t.Fatal(err)
	} else if x, ok := board(at); ok {
		t.Errorf("k=6 read an atom of %d tenants", x.Tenants)
	}
	// A week not sealed is refused, never read as empty.
	if _, err := gate.Read(ctx, conn, gate.DB(db, "service_improvement"), week.AddDate(0, 0, 7), week.AddDate(0, 0, 7), 5); err == nil {
		t.Error("the week in progress was read")
	}
}

// SealDueTo, 'shukei atoms seal': one pass on a connection of its own, what it sealed written;
// a query.k below the policy's fails before connecting.
func TestSealDueTo(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	cfg.Kafka.ReleaseTopic = servicetest.Topic(t, cfg.Kafka.Brokers, 1)
	ctx := context.Background()
	if _, err := migrations.Apply(ctx, conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := SealDueTo(ctx, &b, cfg, nil); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.SplitAfter(strings.TrimSuffix(b.String(), "\n"), "\n") {
		if !strings.HasPrefix(line, "sealed ") && line != "no week to seal" {
			t.Errorf("line %q of\n%s", line, b.String())
		}
	}
	b.Reset()
	cfg.Query.K = 1
	if err := SealDueTo(ctx, &b, cfg, nil); err == nil || !strings.HasPrefix(err.Error(), "query.k=1 is below the policy's k=") || b.Len() != 0 {
		t.Errorf("query.k=1: %v, wrote %q", err, b.String())
	}
}
