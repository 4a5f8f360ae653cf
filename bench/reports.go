package bench

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/demo"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/query"
	"github.com/shukei/shukei/query/principal"
	"github.com/shukei/shukei/registry"
)

// reportTimes are one report's measured latencies.
type reportTimes struct {
	P50ms float64 `json:"p50_ms"`
	P95ms float64 `json:"p95_ms"`
	Rows  int     `json:"rows"`
	N     int     `json:"n"`
}

// ReportsOptions are the choices of Reports.
type ReportsOptions struct {
	Events   int          // events in the store
	Tenants  int          // tenants the events belong to
	Requests int          // timed requests per report
	Reload   bool         // drop and refill the bench database even if it holds enough events
	Out      string       // where to write the results (empty: nowhere)
	Log      *slog.Logger // the query service's log (nil: none)
}

// benchPurposes is the tag of every benchmark event: the five internal purposes (support,
// service_improvement, marketing, follow_up, interview_selection), bits from the policy.
var benchPurposes = uint16(policy.SetOf(policy.Support, policy.ServiceImprovement, policy.Marketing, policy.FollowUp, policy.InterviewSelection))

// Reports fills <database>_bench with synthetic usage (unless it holds enough already), runs
// the query service on loopback and measures every report's latency, printing p50 and p95 and
// writing them to opts.Out ('shukei bench reports' runs it).
func Reports(ctx context.Context, out io.Writer, cfg config.Config, opts ReportsOptions) error {
	events, tenants, requests, reload, outPath := opts.Events, opts.Tenants, opts.Requests, opts.Reload, opts.Out
	log := opts.Log
	if log == nil {
		log = ops.NewLogger(io.Discard, cfg.Log)
	}
	cfg.ClickHouse.Database += "_bench"
	db := cfg.ClickHouse.Database
	conn, err := ops.OpenClickHouse(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The bench database is reused when it holds enough events of the current schema;
	// otherwise it is dropped and filled again.
	var have uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = 'events'", db).Scan(&have); err != nil {
		return err
	}
	if have > 0 {
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".events").Scan(&have); err != nil {
			return err
		}
	}
	stale := ops.Migrate(ctx, io.Discard, cfg) != nil // e.g. a migration changed since the load
	if reload || stale || int(have) < events {
		have = 0
		for _, suffix := range append([]string{""}, migrations.DatabaseSuffixes()...) {
			if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+suffix); err != nil {
				return err
			}
		}
		if err := ops.Migrate(ctx, io.Discard, cfg); err != nil {
			return err
		}
	}
	master, err := ops.MasterKey(cfg.Anonymizer)
	if err != nil {
		return err
	}
	pop := population.New(tenants, 7, "bench-")
	if have > 0 {
		fmt.Fprintf(out, "bench database %s holds %d events (≥ %d): reusing it (--reload refills)\n", db, have, events)
	} else {
		start := time.Now()
		if err := benchLoad(ctx, out, conn, db, pop, events); err != nil {
			return err
		}
		fmt.Fprintf(out, "loaded %d events of %d tenants over 28 days in %s (%.0f events/s, marts included)\n",
			events, tenants, time.Since(start).Round(time.Second), float64(events)/time.Since(start).Seconds())
	}
	// Merge the fresh parts, as the server's background merges do within minutes on a serving
	// system: the bench measures the steady state, not the first minutes after a bulk load.
	for _, t := range []string{"_service_improvement.feature_daily", "_marketing.activity_daily", "_follow_up.tenant_weekly", "_interview_selection.tenant_weekly"} {
		if err := conn.Exec(ctx, "OPTIMIZE TABLE "+db+t+" FINAL"); err != nil {
			return fmt.Errorf("merge %s: %w", db+t, err)
		}
	}

	// A principal for every purpose, a ticket for support, a release and a charge for
	// external_aggregate.
	store := principal.New(conn, db)
	token, hash := principal.NewToken()
	p := principal.Principal{ID: "bench", Kind: principal.Employee, Purposes: []string{"support", "service_improvement", "marketing", "follow_up", "interview_selection", "external_aggregate"}, TokenHashes: []string{hash}}
	if _, err := store.Get(ctx, "bench"); err == nil {
		_, err = store.Update(ctx, "bench", func(old *principal.Principal) error { *old = p; return nil })
		if err != nil {
			return err
		}
	} else if token, err = store.Add(ctx, p); err != nil {
		return err
	}
	reg := registry.New(conn, db, master)
	sup := pop.Tenants[0].Tenant
	if _, err := reg.Add(ctx, sup); err != nil && !errors.Is(err, registry.ErrExists) {
		return err
	}
	if _, err := reg.OpenTicket(ctx, sup.ID, "BENCH-1", time.Hour, "bench"); err != nil {
		return err
	}
	if _, _, err := ledger.New(conn, db).Charge(ctx, ledger.Entry{ReleaseID: "bench", Purpose: "external_aggregate", Period: time.Now().UTC().Format("2006-01"),
		Epsilon: 1, Delta: 1e-9, L0: 1, LInf: 1, WindowStart: time.Now().UTC().Truncate(24 * time.Hour), WindowEnd: time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour), QueryHash: "bench"},
		ledger.Budget{Epsilon: 1e9, Delta: 1}); err != nil {
		return err
	}

	if err := benchReleases(ctx, conn, db); err != nil {
		return err
	}

	// Every complete week sealed, as the release step does after aggregator.seal_after: the
	// aggregate reports read only sealed atoms. Timed: the cost of a week's seal.
	t0 := time.Now()
	sealed, err := aggregator.SealEveryWeek(ctx, cfg, conn, nil)
	if err != nil {
		return fmt.Errorf("seal the bench weeks: %w", err)
	}
	fmt.Fprintf(out, "sealed %d purpose-weeks in %s\n", len(sealed), time.Since(t0).Round(time.Millisecond))
	// Every tenant registered (the per-tenant reports show each one's current status).
	for _, pt := range pop.Tenants {
		if _, err := reg.Add(ctx, pt.Tenant); err != nil && !errors.Is(err, registry.ErrExists) {
			return err
		}
	}

	cfg.Query.Listen, cfg.Query.OpsListen = "127.0.0.1:0", "127.0.0.1:0"
	srvCtx, cancel := context.WithCancel(ctx)
	started := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- query.Serve(srvCtx, cfg, log, started) }()
	var addr string
	select {
	case addr = <-started:
	case err := <-done:
		cancel()
		return err
	}
	defer func() { cancel(); <-done }()

	today := time.Now().UTC().Format(time.DateOnly)
	cases := []struct {
		report string
		q      url.Values
	}{
		{"feature_ranking", url.Values{"purpose": {"service_improvement"}}},
		{"contract_comparison", url.Values{"purpose": {"marketing"}, "weeks": {"4"}, "by_edition": {"true"}}},
		{"tenant_signals", url.Values{"purpose": {"follow_up"}, "as_of": {today}}},
		{"interview_candidates", url.Values{"purpose": {"interview_selection"}, "as_of": {today}, "feature": {"app.record.create,app.record.view"}}},
		{"dp_releases", url.Values{"purpose": {"external_aggregate"}}},
		{"dp_budget", url.Values{"purpose": {"external_aggregate"}}},
		{"support_trace", url.Values{"purpose": {"support"}, "tenant": {sup.ID}, "ticket": {"BENCH-1"}, "at": {time.Now().UTC().Add(-24 * time.Hour).Format(time.RFC3339)}, "around_minutes": {"720"}}},
	}
	results := map[string]reportTimes{}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "report\tpurpose\trows\tp50 ms\tp95 ms\t\n")
	worst := 0.0
	for _, c := range cases {
		var times []float64
		rows := 0
		for i := range requests + 3 {
			t0 := time.Now()
			res, status, err := demo.Get(ctx, "http://"+addr, token, c.report, c.q)
			d := time.Since(t0)
			if err != nil || status != http.StatusOK {
				return fmt.Errorf("%s: %d %v %s", c.report, status, err, res.Error)
			}
			rows = len(res.Rows)
			if i >= 3 { // warm-up
				times = append(times, float64(d.Microseconds())/1000)
			}
		}
		slices.Sort(times)
		rt := reportTimes{P50ms: pct(times, 0.5), P95ms: pct(times, 0.95), Rows: rows, N: len(times)}
		results[c.report] = rt
		if c.report != "support_trace" {
			worst = max(worst, rt.P95ms)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.1f\t\n", c.report, c.q.Get("purpose"), rows, rt.P50ms, rt.P95ms)
	}
	_ = tw.Flush()
	var stored uint64
	_ = conn.QueryRow(ctx, "SELECT count() FROM "+db+".events").Scan(&stored)
	fmt.Fprintf(out, "report_p95_ms (worst aggregate report) = %.1f over %d stored events, %d cores\n", worst, stored, runtime.NumCPU())
	if outPath == "" {
		return nil
	}
	b, _ := json.MarshalIndent(map[string]any{
		"measured_at": time.Now().UTC().Format(time.RFC3339), "events": stored, "tenants": tenants, "cores": runtime.NumCPU(),
		"requests_per_report": requests, "report_p95_ms": worst, "reports": results,
	}, "", "  ")
	if err := os.MkdirAll(filepath.Dir(outPath), 0o755); err != nil {
		return err
	}
	return os.WriteFile(outPath, append(b, '\n'), 0o644)
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

// benchLoad writes n synthetic events straight into the event store, in column batches.
func benchLoad(ctx context.Context, out io.Writer, conn driver.Conn, db string, pop *population.Population, n int) error {
	r := rand.New(rand.NewPCG(7, 11))
	// Tenants weighted by their users: big tenants send more.
	cum := make([]float64, len(pop.Tenants))
	total := 0.0
	for i, t := range pop.Tenants {
		total += float64(t.Users)
		cum[i] = total
	}
	feats := make([][]string, len(pop.Tenants))
	for i := range pop.Tenants {
		feats[i] = pop.Tenants[i].FeatureIDs()
		if len(feats[i]) == 0 {
			feats[i] = []string{population.Features[0]}
		}
	}
	apps := []string{"records", "spaces", "mail", "calendar", "workflow"}
	end := time.Now().UTC().Truncate(24 * time.Hour).Add(24*time.Hour - time.Second)
	const batch = 200_000
	now := time.Now().UTC()
	for done := 0; done < n; done += batch {
		m := min(batch, n-done)
		ids := make([]uuid.UUID, m)
		tenant := make([]string, m)
		at := make([]time.Time, m)
		ingested := make([]time.Time, m)
		cat := make([]string, m)
		ver := make([]uint8, m)
		src := make([]string, m)
		user := make([]string, m)
		oss := make([]string, m)
		major := make([]uint16, m)
		dev := make([]string, m)
		status := make([]string, m)
		edition := make([]string, m)
		band := make([]string, m)
		purposes := make([]uint16, m)
		policyV := make([]uint16, m)
		app := make([]string, m)
		action := make([]string, m)
		feature := make([]string, m)
		uses := make([]uint32, m)
		for i := range m {
			ti, _ := slices.BinarySearch(cum, r.Float64()*total)
			ti = min(ti, len(pop.Tenants)-1)
			t := &pop.Tenants[ti]
			var id [16]byte
			binaryRand(r, id[:])
			ids[i] = uuid.UUID(id)
			tenant[i] = t.ID
			// Weekdays are busier than weekends.
			ts := end.Add(-time.Duration(r.Int64N(int64(28 * 24 * time.Hour))))
			if wd := ts.Weekday(); (wd == time.Saturday || wd == time.Sunday) && r.IntN(3) > 0 {
				ts = ts.Add(-48 * time.Hour)
			}
			at[i], ingested[i] = ts, now
			u := r.IntN(t.Users)
			h := sha256.Sum256(fmt.Appendf(nil, "%s/%d", t.ID, u))
			user[i] = string(h[:16])
			ver[i], src[i], policyV[i] = 1, "bench", 1
			oss[i], major[i], dev[i] = []string{"windows", "macos", "ios", "android"}[u%4], uint16(10+u%5), []string{"desktop", "desktop", "mobile", "tablet"}[u%4]
			status[i], edition[i], band[i] = t.Status, t.Edition, t.SizeBand
			purposes[i] = benchPurposes
			switch x := r.IntN(20); {
			case x < 13:
				cat[i] = "feature_use"
				// Zipf-like over the tenant's features.
				f := feats[ti]
				feature[i] = f[min(len(f)-1, int(float64(len(f))*r.Float64()*r.Float64()))]
				uses[i] = uint32(1 + r.IntN(5))
			case x < 19:
				cat[i] = "app_access"
				app[i], action[i] = apps[r.IntN(len(apps))], "open"
			default:
				cat[i] = "operation"
				app[i], action[i] = apps[r.IntN(len(apps))], "update"
			}
		}
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".events (event_id, tenant_id, occurred_at, ingested_at, category, schema_version, source, user_pseudonym, os, os_major, device_kind, contract_status, edition, size_band, purposes, policy_version, app_id, action, feature_id, use_count)")
		if err != nil {
			return err
		}
		for i, col := range []any{ids, tenant, at, ingested, cat, ver, src, user, oss, major, dev, status, edition, band, purposes, policyV, app, action, feature, uses} {
			if err := b.Column(i).Append(col); err != nil {
				return fmt.Errorf("bench column %d: %w", i, err)
			}
		}
		if err := b.Send(); err != nil {
			return fmt.Errorf("bench insert: %w", err)
		}
		if (done/batch)%10 == 9 {
			fmt.Fprintf(out, "  %d / %d events\n", done+m, n)
		}
	}
	return nil
}

func binaryRand(r *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
}

// benchReleases stores a month of daily releases (5 metrics × 120 cells) if there are none, so
// dp_releases reads a realistic table.
func benchReleases(ctx context.Context, conn driver.Conn, db string) error {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"_external_aggregate.releases").Scan(&n); err != nil || n > 0 {
		return err
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+"_external_aggregate.releases (release_id, plan_hash, window_start, window_end, metric, unit, dims, dim_names, dim_values, value, stddev, ci95_low, ci95_high, epsilon, delta, selected, selection_epsilon, selection_delta, l0, linf, mechanism, policy_version, released_at)")
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(3, 5))
	today := time.Now().UTC().Truncate(24 * time.Hour)
	for d := 1; d <= 30; d++ {
		w := today.AddDate(0, 0, -d)
		for _, metric := range []string{"feature_adoption", "feature_active_users", "client_users", "setting_customisation", "app_access"} {
			for c := range 120 {
				f := population.Features[c%len(population.Features)]
				st := []string{"contracted", "trial", "beta"}[c%3]
				v := int64(r.IntN(2000))
				if err := b.Append(fmt.Sprintf("bench-%s-%s", w.Format("20060102"), metric), "bench", w, w.Add(24*time.Hour), metric, "tenants",
					"feature="+f+"|status="+st, []string{"feature", "status"}, []string{f, st}, v, 33.9, float64(v)-66.4, float64(v)+66.4,
					0.5, 0.0, uint8(0), 0.0, 0.0, int64(12), int64(1), "laplace", uint16(1), w.Add(26*time.Hour)); err != nil {
					return err
				}
			}
		}
	}
	return b.Send()
}
