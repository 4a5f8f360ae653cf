package dashboards

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/internal/freeport"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
)

// TestRunningRolesExportTheDashboardMetrics builds the binary, runs every role against the
// real Kafka and ClickHouse, drives a little traffic through them (a good event, a retried
// one the processor sends to the DLQ, a request to the query service without a token), then
// scrapes each role's /metrics: every metric the dashboards and alert rules use
// (pipelineMetrics) must be exported by a running role, with exactly the declared labels.
func TestRunningRolesExportTheDashboardMetrics(t *testing.T) {
	_, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	raw := servicetest.Topic(t, cfg.Kafka.Brokers, 2)
	dlq := servicetest.Topic(t, cfg.Kafka.Brokers, 1)
	users := servicetest.UsersDir(t)
	t.Cleanup(func() { os.Remove(filepath.Join(users, migrations.UsersFileName(cfg.ClickHouse.Database))) })

	bin := filepath.Join(t.TempDir(), "shukei")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/shukei").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ports := map[string]string{}
	for _, role := range []string{"collector", "processor", "aggregator", "query"} {
		ports[role] = freePort(t)
	}
	queryOps, collectorOps := freePort(t), freePort(t)
	env := append(append(os.Environ(), servicetest.AggregatorEnv()...),
		"SHUKEI_CLICKHOUSE_DATABASE="+cfg.ClickHouse.Database,
		"SHUKEI_CLICKHOUSE_USERS_DIR="+users,
		"SHUKEI_KAFKA_RAW_TOPIC="+raw, "SHUKEI_KAFKA_DLQ_TOPIC="+dlq,
		"SHUKEI_PROCESSOR_GROUP_ID="+servicetest.Name(t, "p."), "SHUKEI_AGGREGATOR_GROUP_ID="+servicetest.Name(t, "a."),
		"SHUKEI_ANONYMIZER_MASTER_KEY="+pseudonym.NewMasterKeyText(),
		"SHUKEI_REGISTRY_REFRESH=200ms",
		"SHUKEI_COLLECTOR_LISTEN=127.0.0.1:"+ports["collector"],
		"SHUKEI_PROCESSOR_LISTEN=127.0.0.1:"+ports["processor"],
		"SHUKEI_AGGREGATOR_LISTEN=127.0.0.1:"+ports["aggregator"],
		"SHUKEI_QUERY_LISTEN=127.0.0.1:"+ports["query"],
		"SHUKEI_QUERY_OPS_LISTEN=127.0.0.1:"+queryOps,
		"SHUKEI_COLLECTOR_OPS_LISTEN=127.0.0.1:"+collectorOps,
		"SHUKEI_LOG_LEVEL=warn",
	)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("shukei %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("migrate")
	out := run("tenants", "add", "--tenant", "acme", "--status", "contracted", "--edition", "standard", "--size-band", "m")
	m := regexp.MustCompile(`ingest token \(shown once\): (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no ingest token in:\n%s", out)
	}
	token := m[1]

	for _, role := range []string{"collector", "processor", "aggregator", "query"} {
		cmd := exec.Command(bin, role)
		cmd.Env = env
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				t.Logf("%s output:\n%s", role, logs.String())
			}
		})
	}
	base := func(role string) string { return "http://127.0.0.1:" + ports[role] }
	for role := range ports {
		waitFor(t, role+" /healthz", 60*time.Second, func() bool {
			resp, err := http.Get(base(role) + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}

	// Traffic: one event, then the same event again (a collector retry, which the processor
	// stores once and sends to the DLQ as a duplicate); a query without a token.
	ev := map[string]any{
		"event_id": uuid.NewString(), "tenant_id": "acme", "occurred_at": time.Now().UTC().Add(-time.Minute).Format(time.RFC3339),
		"schema": "feature_use/v1", "source": "web-app", "user": "u-1",
		"client": map[string]any{"os": "windows", "os_version": "11", "device_kind": "desktop"},
		"data":   map[string]any{"feature_id": "app.record.create", "count": 1, "records_registered": 0},
	}
	body, _ := json.Marshal([]any{ev})
	for range 2 {
		waitFor(t, "collector accepts the event", 30*time.Second, func() bool {
			req, _ := http.NewRequest("POST", base("collector")+"/v1/events", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		time.Sleep(1500 * time.Millisecond) // two batches: the retry meets a stored event_id
	}
	resp, err := http.Get(base("query") + "/v1/reports/feature_ranking?purpose=service_improvement")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("query without a token: %d", resp.StatusCode)
	}
	// The public listeners (query service, collector) serve no metrics; their ops listeners do.
	for _, role := range []string{"query", "collector"} {
		if resp, err := http.Get(base(role) + "/metrics"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Errorf("the %s serves /metrics on its public listener", role)
			}
		}
	}
	metricsURL := func(role string) string {
		switch role {
		case "query":
			return "http://127.0.0.1:" + queryOps + "/metrics"
		case "collector":
			return "http://127.0.0.1:" + collectorOps + "/metrics"
		}
		return base(role) + "/metrics"
	}

	// Scrape until every promised metric is there (the processor needs a batch or two).
	var missing []string
	var found map[string][]string
	deadline := time.Now().Add(60 * time.Second)
	for {
		found = map[string][]string{}
		for role := range ports {
			for name, labels := range scrape(t, metricsURL(role)) {
				found[name] = labels
			}
		}
		missing = missing[:0]
		for name := range pipelineMetrics {
			if _, ok := found[name]; !ok && name != "up" {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Fatalf("metrics the dashboards or rules use that no running role exports: %v", missing)
	}
	for name, want := range pipelineMetrics {
		if name == "up" {
			continue
		}
		got := found[name]
		w := slices.Clone(want.labels)
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Errorf("%s has labels %v on /metrics, pipelineMetrics declares %v", name, got, w)
		}
	}
}

// scrape returns each metric family's label names (sorted, from its first series).
func scrape(t *testing.T, url string) map[string][]string {
	resp, err := http.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	out := map[string][]string{}
	for name, f := range fams {
		var labels []string
		if ms := f.GetMetric(); len(ms) > 0 {
			labels = labelNames(ms[0])
		}
		out[name] = labels
	}
	return out
}

func labelNames(m *dto.Metric) []string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName())
	}
	slices.Sort(out)
	return out
}

func freePort(t *testing.T) string {
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	return port
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s", d, what)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
