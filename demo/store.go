package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/collector"
	"github.com/shukei/shukei/pipeline/processor"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

// demoTenantList is the demo's customers: a contract mix of contracted, trial and beta
// tenants across editions and size bands, and one that has ended its contract.
var demoTenantList = []registry.Tenant{
	{ID: "demo-acme", Status: registry.StatusContracted, Edition: "enterprise", SizeBand: "l"},
	{ID: "demo-globex", Status: registry.StatusContracted, Edition: "standard", SizeBand: "m"},
	{ID: "demo-initech", Status: registry.StatusTrial, Edition: "standard", SizeBand: "s"},
	{ID: "demo-umbrella", Status: registry.StatusBeta, Edition: "enterprise", SizeBand: "l"},
	{ID: "demo-hooli", Status: registry.StatusTerminated, Edition: "standard", SizeBand: "m"},
}

func demoTenants(ctx context.Context, out io.Writer, cfg config.Config, master *pseudonym.MasterKey) error {
	conn, err := ops.OpenClickHouse(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	reg := registry.New(conn, cfg.ClickHouse.Database, master).Placing(cfg.ClickHouse.Cluster)
	fmt.Fprintln(out, "\n-- Tenant registry: demo customers")
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   TENANT\tSTATUS\tEDITION\tSIZE\t")
	for _, t := range demoTenantList {
		if _, err := reg.Add(ctx, t); err != nil && !errors.Is(err, registry.ErrExists) {
			return err
		}
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%s\t\n", t.ID, t.Status, t.Edition, t.SizeBand)
	}
	return tw.Flush()
}

// demoProcess runs the processor until every message of the raw topic is accounted for in
// ClickHouse, then shows what was stored, refused, and what the purpose marts received.
// demoProcessor starts a processor on cfg; the returned function stops it.
func demoProcessor(ctx context.Context, conn driver.Conn, cfg config.Config, master *pseudonym.MasterKey, log *slog.Logger) (func(), error) {
	p, cache, err := processor.Wire(ctx, conn, conn, cfg, master, log, func(d *processor.Deps) {
		d.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	})
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	go func() { _ = cache.Run(runCtx) }()
	return func() { stop(); <-done }, nil
}

func demoProcess(ctx context.Context, out io.Writer, cfg config.Config, master *pseudonym.MasterKey, log *slog.Logger, st *demoStats) error {
	conn, err := ops.OpenClickHouse(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop, err := demoProcessor(ctx, conn, cfg, master, log)
	if err != nil {
		return err
	}
	defer stop()

	ends, err := endOffsets(ctx, cfg.Kafka)
	if err != nil {
		return err
	}
	var total uint64
	for _, o := range ends {
		total += uint64(o)
	}
	db := cfg.ClickHouse.Database
	fmt.Fprintf(out, "\n-- Processor: %d messages in %s to account for\n", total, cfg.Kafka.RawTopic)
	start := time.Now()
	var stored, rejected uint64
	for {
		// A failed count (ClickHouse restarting) is only a reason to look again.
		errE := conn.QueryRow(ctx, "SELECT count() FROM "+databases.Across(cfg.ClickHouse.Cluster, db+".events")).Scan(&stored)
		errR := conn.QueryRow(ctx, "SELECT count() FROM "+db+".rejections WHERE class != 'checkpoint'").Scan(&rejected)
		if errE == nil && errR == nil && stored+rejected >= total {
			break
		}
		if time.Since(start) > 3*time.Minute {
			return fmt.Errorf("the processor accounted for %d of %d messages in 3 minutes", stored+rejected, total)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	el := time.Since(start)
	st.processorRate = float64(stored+rejected) / el.Seconds()
	fmt.Fprintf(out, "   every message accounted for in %s (%.0f messages/s): stored %d + rejected %d = %d\n", el.Round(time.Millisecond), st.processorRate, stored, rejected, stored+rejected)

	fmt.Fprintln(out, "\n   rejected, by reason (a refusal keeps a content-free form only: refused values as keyed hashes, no raw user):")
	rows, err := conn.Query(ctx, "SELECT reason, toString(class), count(), countIf(payload != '') FROM "+db+".rejections WHERE class != 'checkpoint' GROUP BY reason, class ORDER BY count() DESC")
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   REASON\tCLASS\tCOUNT\tCONTENT-FREE FORM KEPT\t")
	for rows.Next() {
		var reason, class string
		var n, kept uint64
		if err := rows.Scan(&reason, &class, &n, &kept); err != nil {
			rows.Close()
			return err
		}
		fmt.Fprintf(tw, "   %s\t%s\t%d\t%d\t\n", reason, class, n, kept)
	}
	rows.Close()
	_ = tw.Flush()

	fmt.Fprintln(out, "\n   stored, by tenant status and the purposes the policy allowed:")
	rows, err = conn.Query(ctx, "SELECT toString(contract_status), purposes, policy_version, count() FROM "+databases.Across(cfg.ClickHouse.Cluster, db+".events")+" GROUP BY contract_status, purposes, policy_version ORDER BY contract_status, purposes")
	if err != nil {
		return err
	}
	tw = tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   STATUS\tPOLICY\tPURPOSES\tEVENTS\t")
	for rows.Next() {
		var status string
		var purposes, version uint16
		var n uint64
		if err := rows.Scan(&status, &purposes, &version, &n); err != nil {
			rows.Close()
			return err
		}
		fmt.Fprintf(tw, "   %s\tv%d\t%s\t%d\t\n", status, version, policy.Set(purposes), n)
	}
	rows.Close()
	_ = tw.Flush()

	fmt.Fprintln(out, "\n   what each purpose's mart received (its own database, only what the policy allows):")
	tw = tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   MART\tROWS\tGRANULARITY\t")
	for _, m := range []struct{ table, grain string }{
		{"_support.trace", "event level, pseudonymous users"},
		{"_service_improvement.feature_daily", "per tenant and day, users as uniq sketches"},
		{"_marketing.activity_daily", "per segment, tenant and day"},
		{"_follow_up.tenant_daily", "per tenant and day"},
		{"_interview_selection.tenant_daily", "per tenant and day"},
		{"_external_consented.tenant_daily", "per consenting tenant and day"},
	} {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+databases.Across(cfg.ClickHouse.Cluster, db+m.table)).Scan(&n); err != nil {
			return err
		}
		fmt.Fprintf(tw, "   %s%s\t%d\t%s\t\n", db, m.table, n, m.grain)
	}
	return tw.Flush()
}

const demoProbes = 60

// ProbeLatency measures end-to-end latency n times: a probe event posted to the collector at
// base (as tenant, with token), timed from the collector's acknowledgement until a query finds
// it in the table events (the event store; on a cluster, its Distributed table). Probes are
// sent one after another without waiting for the previous one to be stored, so a batch timeout
// is not paid once per probe; a first probe warms up the processor (group join, partition
// assignment). The durations come back sorted.
func ProbeLatency(ctx context.Context, conn driver.Conn, events, base, token, tenant string, n int) ([]time.Duration, error) {
	url := base + "/v1/events"
	send := func() (string, time.Time, error) {
		id := uuid.NewString()
		body := fmt.Sprintf(`{"event_id":%q,"tenant_id":%q,"occurred_at":%q,"schema":"app_access/v1","source":"latency-probe","user":"probe","client":{"os":"windows","device_kind":"desktop"},"data":{"app_id":"records","action":"open"}}`,
			id, tenant, time.Now().UTC().Format(time.RFC3339))
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", time.Time{}, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", time.Time{}, fmt.Errorf("probe: status %d", resp.StatusCode)
		}
		return id, time.Now(), nil
	}
	stored := func(ids []string) (map[string]bool, error) {
		rows, err := conn.Query(ctx, "SELECT toString(event_id) FROM "+events+" WHERE tenant_id = ? AND has(?, toString(event_id))", tenant, ids)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		got := map[string]bool{}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return nil, err
			}
			got[id] = true
		}
		return got, rows.Err()
	}
	// Warm-up: the processor joins its group and is assigned partitions first.
	id, _, err := send()
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(time.Minute); ; {
		got, err := stored([]string{id})
		if err == nil && got[id] {
			break
		}
		if time.Now().After(deadline) {
			return nil, errors.New("the latency probe's first event was not stored within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	sentAt := map[string]time.Time{}
	var lat []time.Duration
	pending := []string{}
	for i := 0; i < n || len(pending) > 0; {
		if i < n {
			id, at, err := send()
			if err != nil {
				return nil, err
			}
			sentAt[id] = at
			pending = append(pending, id)
			i++
		}
		got, err := stored(pending)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		keep := pending[:0]
		for _, id := range pending {
			if got[id] {
				lat = append(lat, now.Sub(sentAt[id]))
			} else if now.Sub(sentAt[id]) > time.Minute {
				return nil, fmt.Errorf("probe %s not stored within a minute", id)
			} else {
				keep = append(keep, id)
			}
		}
		pending = keep
		time.Sleep(50 * time.Millisecond)
	}
	slices.Sort(lat)
	return lat, nil
}

// demoLatency measures end-to-end latency: from the collector's acknowledgement of an event to
// the moment a query finds it in the store, with the collector and the processor running.
func demoLatency(ctx context.Context, out io.Writer, cfg config.Config, master *pseudonym.MasterKey, log *slog.Logger, st *demoStats) error {
	conn, err := ops.OpenClickHouse(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop, err := demoProcessor(ctx, conn, cfg, master, log)
	if err != nil {
		return err
	}
	defer stop()
	const tenant, token = "demo-acme", "shk_demo_latency_probe_token"
	cfg.Collector.IngestTokens = []string{collector.TokenHash(tenant, token)}
	base, stopSrv, err := demoCollector(ctx, cfg, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	defer stopSrv()
	lat, err := ProbeLatency(ctx, conn, databases.Across(cfg.ClickHouse.Cluster, cfg.ClickHouse.Database+".events"), base, token, tenant, demoProbes)
	if err != nil {
		return err
	}
	st.e2eP50, st.e2eP95 = lat[len(lat)/2], lat[len(lat)*95/100]
	fmt.Fprintf(out, "\n-- End-to-end latency: %d probe events, collector acknowledgement → found by a query in the store: p50 %s, p95 %s (processor.batch_timeout %s)\n",
		demoProbes, st.e2eP50.Round(time.Millisecond), st.e2eP95.Round(time.Millisecond), cfg.Processor.BatchTimeout)
	return nil
}
