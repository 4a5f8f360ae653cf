package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/client"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/collector"
	"github.com/shukei/shukei/pipeline/topic"
)

// Options are the demo's choices besides the configuration.
type Options struct {
	Exit   bool         // stop after printing instead of serving the web page until ctx ends
	Fresh  bool         // drop the configured database, its purpose databases and its topics first
	Events int          // synthetic events the load generator sends
	Log    *slog.Logger // the roles' log (nil: none)
}

// Run is the demo: it prepares the services, runs every role on synthetic usage of many tenants,
// prints to out what each kind of user of Shukei gets, and (unless opts.Exit) keeps the web page
// up until ctx ends. 'shukei demo' runs it.
func Run(ctx context.Context, out io.Writer, cfg config.Config, opts Options) error {
	log := opts.Log
	if log == nil {
		log = ops.NewLogger(io.Discard, cfg.Log)
	}
	// History from the first day of the previous month: events that old are accepted
	// in the demo.
	cfg.Events.MaxAge = max(cfg.Events.MaxAge, time.Duration(demoDays(time.Now())+1)*24*time.Hour)
	fmt.Fprintln(out, "== Shukei demo ==")
	if opts.Fresh {
		if err := demoReset(ctx, out, cfg); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "\n-- ClickHouse %v: schema\n", cfg.ClickHouse.Addr)
	if err := ops.Migrate(ctx, out, cfg); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n-- Kafka %v: topics\n", cfg.Kafka.Brokers)
	if err := topic.EnsurePrinted(ctx, out, cfg.Kafka); err != nil {
		return err
	}
	master, err := ops.MasterKey(cfg.Anonymizer)
	if err != nil {
		return fmt.Errorf("%w (make demo writes one to .services/master.key)", err)
	}
	if err := demoTenants(ctx, out, cfg, master); err != nil {
		return err
	}
	// History first, then today's events: the aggregator's event-time watermark follows
	// each partition's newest event, so history sent after today's would be late.
	var st demoStats
	if err := demoLoad(ctx, out, cfg, master, opts.Events, &st); err != nil {
		return err
	}
	if err := demoIngest(ctx, out, cfg); err != nil {
		return err
	}
	if err := demoProcess(ctx, out, cfg, master, log, &st); err != nil {
		return err
	}
	if err := demoAggregate(ctx, out, cfg, master, &st); err != nil {
		return err
	}
	if err := demoLatency(ctx, out, cfg, master, log, &st); err != nil {
		return err
	}
	addr, tokens, stop, err := demoQuery(ctx, out, cfg, log)
	if err != nil {
		return err
	}
	defer stop()
	demoMeasured(out, st)
	if opts.Exit {
		return nil
	}
	fmt.Fprintf(out, "\n== The web page is at http://%s/ — sign in with a token (Ctrl-C stops):\n", addr)
	for _, p := range demoPrincipals {
		fmt.Fprintf(out, "   %-16s %s\n", p.ID, tokens[p.ID])
	}
	<-ctx.Done()
	return nil
}

// demoIngest runs a collector on a free loopback port and drives it: good events through the Go
// SDK, and a handful of events that carry customer content through plain HTTP.
func demoIngest(ctx context.Context, out io.Writer, cfg config.Config) error {
	const tenant = "demo-acme" // registered by demoTenants
	var tb [16]byte
	_, _ = rand.Read(tb[:])
	token := "shk_demo_" + hex.EncodeToString(tb[:])
	cfg.Collector.IngestTokens = []string{collector.TokenHash(tenant, token)} // a token of this run only

	reg := prometheus.NewRegistry()
	url, stop, err := demoCollector(ctx, cfg, reg)
	if err != nil {
		return err
	}
	defer stop()

	before, err := endOffsets(ctx, cfg.Kafka)
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "\n-- Collector at %s: 2,000 usage events through the Go SDK\n", url)
	sdk, err := client.New(client.Config{Endpoint: url, Token: token, TenantID: tenant, Source: "demo-web", FlushAt: 500})
	if err != nil {
		return err
	}
	features := []string{"app.record.create", "app.record.view", "space.post.create", "space.post.reaction", "app.export.csv"}
	oses := []event.OS{event.OSWindows, event.OSMacOS, event.OSIOS, event.OSAndroid}
	start := time.Now()
	for i := range 2000 {
		ev := event.Event{
			Envelope: event.Envelope{
				User:   fmt.Sprintf("u-%d", i%137),
				Client: event.Client{OS: oses[i%len(oses)], OSVersion: "17", DeviceKind: event.DeviceDesktop},
			},
			Data: &event.FeatureUse{FeatureID: features[(i*i)%len(features)], Count: int64(1 + i%4), RecordsRegistered: int64(i % 2)},
		}
		if err := sdk.Track(ev); err != nil {
			return err
		}
	}
	if err := sdk.Close(ctx); err != nil {
		return err
	}
	st := sdk.Stats()
	fmt.Fprintf(out, "   sent %d, rejected %d, dropped %d, retried %d in %s\n", st.Sent, st.Rejected, st.Dropped, st.Retried, time.Since(start).Round(time.Millisecond))

	fmt.Fprintln(out, "\n-- Events that carry customer content are refused at the door (content never echoed):")
	leaks := []struct{ what, field, value string }{
		{"an email address as the user", "user", "taro.yamada@example.co.jp"},
		{"a person's name as the user", "user", "山田太郎"},
		{"a file name as a feature id", "feature_id", "見積書_2026.xlsx"},
		{"a sentence as a feature id", "feature_id", "please call me back tomorrow"},
		{"a URL with a query as a feature id", "feature_id", "https://example.com/share?doc=123"},
	}
	var batch []map[string]any
	for _, l := range leaks {
		ev := map[string]any{
			"event_id": uuid.NewString(), "tenant_id": tenant, "occurred_at": time.Now().UTC().Format(time.RFC3339),
			"schema": "feature_use/v1", "source": "demo-web", "user": "u-1",
			"client": map[string]any{"os": "windows", "os_version": "11", "device_kind": "desktop"},
			"data":   map[string]any{"feature_id": "app.record.create", "count": 1, "records_registered": 0},
		}
		if l.field == "user" {
			ev["user"] = l.value
		} else {
			ev["data"].(map[string]any)[l.field] = l.value
		}
		batch = append(batch, ev)
	}
	body, _ := json.Marshal(batch)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/events", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	var reply collector.Reply
	err = json.NewDecoder(resp.Body).Decode(&reply)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("collector reply: %w", err)
	}
	fmt.Fprintf(out, "   %-36s %-10s %s\n", "event", "status", "reason (field)")
	for i, r := range reply.Results {
		fmt.Fprintf(out, "   %-36s %-10s %s (%s)\n", leaks[i].what, r.Status, r.Reason, r.Field)
	}

	after, err := endOffsets(ctx, cfg.Kafka)
	if err != nil {
		return err
	}
	var added int64
	for p, off := range after {
		added += off - before[p]
	}
	fmt.Fprintf(out, "\n-- Kafka %s now holds %d more events (the SDK's accepted ones, none of the refused)\n", cfg.Kafka.RawTopic, added)
	if added != int64(st.Sent) {
		return fmt.Errorf("kafka gained %d events but the collector accepted %d", added, st.Sent)
	}
	return demoBypass(ctx, out, cfg)
}

// demoBypass writes straight to Kafka what a producer that skipped the collector might: the
// processor runs the same decision, so the door holds even then.
func demoBypass(ctx context.Context, out io.Writer, cfg config.Config) error {
	base := func(tenant string) map[string]any {
		return map[string]any{
			"event_id": uuid.NewString(), "tenant_id": tenant, "occurred_at": time.Now().UTC().Format(time.RFC3339),
			"schema": "app_access/v1", "source": "legacy-batch", "user": "u-77",
			"client": map[string]any{"os": "macos", "os_version": "14.5", "device_kind": "desktop"},
			"data":   map[string]any{"app_id": "expense-claims", "action": "open"},
		}
	}
	leak := base("demo-globex")
	leak["data"].(map[string]any)["app_id"] = "hanako.suzuki@example.co.jp"
	ok := base("demo-globex")
	okBytes, _ := json.Marshal(ok)
	msgs := []struct {
		what, key string
		v         any
	}{
		{"an email address as an app id", "demo-globex", leak},
		{"malformed JSON", "demo-globex", `{"event_id": 42, "tenant_id": `},
		{"a tenant the registry does not know", "demo-unknown", base("demo-unknown")},
		{"a tenant whose contract ended (silent: nothing of it kept)", "demo-hooli", base("demo-hooli")},
		{"a good event", "demo-globex", ok},
		{"the same event again (a collector retry)", "demo-globex", string(okBytes)},
	}
	w := &kafka.Writer{Addr: kafka.TCP(cfg.Kafka.Brokers...), Topic: cfg.Kafka.RawTopic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	fmt.Fprintln(out, "\n-- Written straight to Kafka, bypassing the collector (the processor decides the same way):")
	var kms []kafka.Message
	for _, m := range msgs {
		var b []byte
		switch v := m.v.(type) {
		case string:
			b = []byte(v)
		default:
			b, _ = json.Marshal(v)
		}
		kms = append(kms, kafka.Message{Key: []byte(m.key), Value: b})
		fmt.Fprintf(out, "   %s\n", m.what)
	}
	return w.WriteMessages(ctx, kms...)
}

// endOffsets returns the raw topic's end offset per partition. A partition created moments ago
// can answer "not leader" for a short while; that is retried.
func endOffsets(ctx context.Context, k config.Kafka) (map[int]int64, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := endOffsetsOnce(ctx, k)
		var kerr kafka.Error
		if err == nil || !errors.As(err, &kerr) || !kerr.Temporary() || time.Now().After(deadline) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func endOffsetsOnce(ctx context.Context, k config.Kafka) (map[int]int64, error) {
	cl := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{k.RawTopic}})
	if err != nil || len(meta.Topics) != 1 {
		return nil, fmt.Errorf("metadata of %s: %v", k.RawTopic, err)
	}
	var reqs []kafka.OffsetRequest
	for _, p := range meta.Topics[0].Partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	res, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{k.RawTopic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("offsets of %s: %w", k.RawTopic, err)
	}
	out := map[int]int64{}
	parts := res.Topics[k.RawTopic]
	sort.Slice(parts, func(i, j int) bool { return parts[i].Partition < parts[j].Partition })
	for _, p := range parts {
		if p.Error != nil {
			return nil, p.Error
		}
		out[p.Partition] = p.LastOffset
	}
	return out, nil
}

// demoMeasured prints what the run measured.
func demoMeasured(out io.Writer, st demoStats) {
	fmt.Fprintln(out, "\n-- Measured in this run (one stage at a time, on this machine; bench/README.md has the benchmarks)")
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "   STAGE\tEVENTS/S\tWHAT\t")
	fmt.Fprintf(tw, "   collector\t%.0f\t%d events posted (NDJSON, 500 a request, 4 at once), %d accepted\t\n", st.collectorRate, st.events, st.accepted)
	fmt.Fprintf(tw, "   processor\t%.0f\tKafka → decide → ClickHouse store and marts, every offset accounted for\t\n", st.processorRate)
	fmt.Fprintf(tw, "   aggregator\t%.0f\tKafka → bound → partials → DP release of every closed day\t\n", st.aggRate)
	_ = tw.Flush()
	fmt.Fprintf(out, "   end-to-end (collector ack → queryable): p50 %s, p95 %s\n", st.e2eP50.Round(time.Millisecond), st.e2eP95.Round(time.Millisecond))
}

// demoCollector runs a collector on a free loopback port until stop is called, and returns
// its base URL.
func demoCollector(ctx context.Context, cfg config.Config, reg *prometheus.Registry) (url string, stop func(), err error) {
	w := collector.NewKafkaWriter(cfg.Kafka, cfg.Collector)
	c, err := collector.New(cfg, collector.Deps{Writer: w, Registry: reg, Log: ops.NewLogger(io.Discard, cfg.Log)})
	if err != nil {
		w.Close()
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.Close()
		return "", nil, err
	}
	srvCtx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- c.Serve(srvCtx, ln) }()
	return "http://" + ln.Addr().String(), func() { cancel(); <-served; w.Close() }, nil
}
