package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/freeport"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/collector"
	"github.com/shukei/shukei/pipeline/topic"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runCLIWithin(t, time.Minute, args...)
}

func runCLIWithin(t *testing.T, d time.Duration, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// ownServices points the commands run by this test at a database and topics of its own on the
// real services, and returns the topic names.
func ownServices(t *testing.T) (raw, dlq string) {
	t.Helper()
	_, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	raw, dlq = servicetest.Name(t, "raw."), servicetest.Name(t, "dlq.")
	t.Cleanup(func() { _ = topic.Delete(context.Background(), cfg.Kafka.Brokers, raw, dlq) })
	t.Setenv("SHUKEI_CLICKHOUSE_DATABASE", cfg.ClickHouse.Database)
	t.Setenv("SHUKEI_KAFKA_RAW_TOPIC", raw)
	t.Setenv("SHUKEI_KAFKA_DLQ_TOPIC", dlq)
	t.Setenv("SHUKEI_PROCESSOR_GROUP_ID", servicetest.Name(t, "group."))
	t.Setenv("SHUKEI_ANONYMIZER_MASTER_KEY", pseudonym.NewMasterKeyText())
	users := servicetest.UsersDir(t)
	t.Setenv("SHUKEI_CLICKHOUSE_USERS_DIR", users)
	t.Cleanup(func() { os.Remove(filepath.Join(users, migrations.UsersFileName(cfg.ClickHouse.Database))) })
	return raw, dlq
}

func TestHelpExplainsRolesAndSettings(t *testing.T) {
	out, err := runCLI(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"migrate", "topics", "demo", "config", "collector", "--log.level", "SHUKEI_LOG_LEVEL", "--config", "--kafka.brokers"} {
		if !strings.Contains(out, want) {
			t.Errorf("shukei --help does not mention %q", want)
		}
	}
	for _, role := range []string{"migrate", "topics", "demo", "config", "collector"} {
		out, err := runCLI(t, role, "--help")
		if err != nil {
			t.Fatal(err)
		}
		if len(out) < 200 {
			t.Errorf("shukei %s --help says too little:\n%s", role, out)
		}
	}
}

// A command's --help lists the flags of the sections it reads and no others (a subcommand
// those of its group); 'shukei config --help' lists every setting's flag.
func TestCommandHelpListsOnlyItsFlags(t *testing.T) {
	flags := func(args ...string) map[string]bool {
		t.Helper()
		out, err := runCLI(t, append(args, "--help")...)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, m := range regexp.MustCompile(`--([a-z_]+)\.([a-z_]+)`).FindAllStringSubmatch(out, -1) {
			got[m[1]+"."+m[2]] = true
		}
		return got
	}
	cases := []struct {
		args      []string
		want, not []string
	}{
		{[]string{"tenants", "add"}, []string{"clickhouse.addr", "anonymizer.master_key_file", "log.level"}, []string{"aggregator.", "processor.", "collector.", "query."}},
		{[]string{"processor"}, []string{"processor.batch_size", "kafka.brokers", "clickhouse.addr", "registry.refresh", "events.max_event_bytes"}, []string{"aggregator.", "query.", "audit.", "ledger.", "collector."}},
		{[]string{"collector", "token"}, []string{"collector.max_in_flight", "kafka.brokers"}, []string{"aggregator.", "query.", "ledger."}},
		{[]string{"topics"}, []string{"kafka.raw_partitions"}, []string{"clickhouse.", "aggregator."}},
	}
	for _, c := range cases {
		got := flags(c.args...)
		for _, w := range c.want {
			if !got[w] {
				t.Errorf("shukei %s --help lacks --%s", strings.Join(c.args, " "), w)
			}
		}
		for f := range got {
			for _, n := range c.not {
				if strings.HasPrefix(f, n) {
					t.Errorf("shukei %s --help lists --%s, a setting it does not read", strings.Join(c.args, " "), f)
				}
			}
		}
	}
	all := flags("config")
	for _, p := range config.Paths() {
		if !all[p] {
			t.Errorf("shukei config --help lacks --%s", p)
		}
	}
}

func TestBadConfigurationStopsEveryRole(t *testing.T) {
	t.Setenv("SHUKEI_KAFKA_RAW_PARTITIONS", "0")
	_, err := runCLI(t, "config", "--log.level=loud")
	if err == nil {
		t.Fatal("accepted a bad configuration")
	}
	for _, want := range []string{"kafka.raw_partitions", "log.level"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}

func TestMigrateAndTopicsOnRealServices(t *testing.T) {
	raw, dlq := ownServices(t)

	out, err := runCLI(t, "migrate")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if !strings.Contains(out, "applied  0001_databases") {
		t.Errorf("first migrate did not apply 0001:\n%s", out)
	}
	if !strings.Contains(out, "role users: 17 ClickHouse users of 5 roles") {
		t.Errorf("migrate did not declare the roles' users:\n%s", out)
	}
	// The roles' users and nothing else: no ClickHouse user for the dashboards (promise 10).
	master, err := pseudonym.ParseMasterKey(os.Getenv("SHUKEI_ANONYMIZER_MASTER_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	db := os.Getenv("SHUKEI_CLICKHOUSE_DATABASE")
	users, err := os.ReadFile(filepath.Join(os.Getenv("SHUKEI_CLICKHOUSE_USERS_DIR"), migrations.UsersFileName(db)))
	all := migrations.AllUsers(db, master.Derive("clickhouse-users"))
	if err != nil || strings.Contains(string(users), "dashboards") || strings.Count(string(users), "<password_sha256_hex>") != len(all) || len(all) != 17 {
		t.Errorf("users.d file: want the 17 role users and nothing else: %v\n%s", err, users)
	}
	for _, u := range all {
		if !strings.Contains(string(users), "<"+u.Name+">") {
			t.Errorf("users.d does not declare %s", u.Name)
		}
		if strings.Contains(string(users), u.Password) {
			t.Errorf("users.d holds %s's password in clear", u.Name)
		}
	}
	out, err = runCLI(t, "migrate")
	if err != nil || strings.Contains(out, "applied  ") {
		t.Errorf("second migrate should apply nothing: %v\n%s", err, out)
	}
	out, err = runCLI(t, "topics", "--kafka.raw_partitions=3")
	if err != nil {
		t.Fatalf("topics: %v\n%s", err, out)
	}
	if !strings.Contains(out, "created  "+raw+" (3 partitions)") || !strings.Contains(out, "created  "+dlq+" (3 partitions)") {
		t.Errorf("topics output:\n%s", out)
	}
}

func TestUnreachableServicesSayWhatToDo(t *testing.T) {
	_, err := runCLI(t, "migrate", "--clickhouse.addr=127.0.0.1:1", "--clickhouse.dial_timeout=1s")
	if err == nil || !strings.Contains(err.Error(), "scripts/services.sh up") {
		t.Errorf("migrate against nothing: %v", err)
	}
	_, err = runCLI(t, "topics", "--kafka.brokers=127.0.0.1:1", "--kafka.dial_timeout=1s")
	if err == nil || !strings.Contains(err.Error(), "scripts/services.sh up") {
		t.Errorf("topics against nothing: %v", err)
	}
}

// TestDemoOnRealServices runs the demo twice with --fresh (as 'make demo' does): each run
// must tell the whole story from nothing — the second one too, instead of replaying what the
// first stored, closed and audited.
//
// Under -race it makes one run of 5,000 events: the detector still watches every role the
// demo runs in one process, and the whole test (two runs of 30,000) runs in make test's pass
// without -race, beside the statistical tests (in CI the two runs took 632 s under -race,
// 167 s without).
func TestDemoOnRealServices(t *testing.T) {
	if raceDetector {
		testDemo(t, 1, 5000)
		return
	}
	testDemo(t, 2, 30000)
}

func testDemo(t *testing.T, runs, events int) {
	ownServices(t)
	for run := 1; run <= runs; run++ {
		// A guard against a hung demo, not a speed test: under -race on a loaded 2-core machine
		// one run of 30,000 events took over 5 minutes (sending alone ran at 270 events/s).
		out, err := runCLIWithin(t, 8*time.Minute, "demo", "--fresh", "--exit", "--events", strconv.Itoa(events))
		if err != nil {
			t.Fatalf("demo run %d: %v\n%s", run, err, out)
		}
		if run == 2 && !strings.Contains(out, "-- Fresh start (--fresh): dropped ") {
			t.Errorf("the second run did not say what it dropped:\n%s", out)
		}
		checkDemo(t, out, events)
		if t.Failed() {
			t.Fatalf("demo run %d", run)
		}
	}
}

func checkDemo(t *testing.T, out string, events int) {
	t.Helper()
	for _, want := range []string{
		"sent 2000, rejected 0, dropped 0",
		"input_data.email (user)",
		"input_data.personal_name (user)",
		"input_data.file_name (data.feature_id)",
		"holds 2000 more events",
		"every message accounted for",
		"ledger hash chain verified",
		"malformed_json",
		"unknown_tenant",
		"tenant_terminated",
		"duplicate_event_id",
		"input_data.email",
		"Feature ranking — product-team reads feature_ranking for service_improvement",
		"Contracted vs trial — product-team reads contract_comparison for marketing",
		"Follow-up candidates — product-team reads tenant_signals for follow_up",
		"Interview candidates — research-agency reads interview_candidates for interview_selection",
		"Differentially private release — stats-partner reads dp_releases for external_aggregate",
		"Refused — research-agency asks contract_comparison for marketing: 403 purpose not granted",
		"-- Measured in this run",
		"end-to-end (collector ack → queryable): p50 ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// Every message accounted for: the SDK's 2,000 and one good event straight to Kafka, the
	// synthetic customers' events the collector accepted, and five rejections (the bad ones of
	// the load were refused at the door, with their reasons).
	var accepted, stored, total int
	if m := regexp.MustCompile(`sent ` + strconv.Itoa(events) + ` in \S+ \(\d+ events/s\): accepted (\d+), refused at the door (\d+) \((.*)\)`).FindStringSubmatch(out); m != nil {
		accepted, _ = strconv.Atoi(m[1])
		refused, _ := strconv.Atoi(m[2])
		if accepted+refused != events || refused < events/200 || !strings.Contains(m[3], "input_data.email") {
			t.Errorf("load: accepted %d, refused %d (%s)", accepted, refused, m[3])
		}
	}
	if m := regexp.MustCompile(`stored (\d+) \+ rejected 5 = (\d+)`).FindStringSubmatch(out); m != nil {
		stored, _ = strconv.Atoi(m[1])
		total, _ = strconv.Atoi(m[2])
	}
	if accepted == 0 || stored != 2001+accepted || total != stored+5 {
		t.Errorf("want stored %d + rejected 5 (load accepted %d); got stored %d, total %d", 2001+accepted, accepted, stored, total)
	}
	// The partner view: the guarantee, the month's top 10 features by status with intervals, the
	// weeks, the distance from the truth; no negative value anywhere, no terminated cell.
	for _, want := range []string{"-- Partner view: external_aggregate, month ", "the unit is the tenant; neighbouring datasets differ by one tenant's whole usage",
		"ε=1 per metric for the month", "weekly adoption among contracted tenants", "Distance from the truth"} {
		if !strings.Contains(out, want) {
			t.Errorf("the partner view lacks %q", want)
		}
	}
	// Feature ids may hold underscores (api.rate_limit, audit_log.retention): with the noise of
	// a small run any released feature may rank in the top 10.
	cell := `(\d+ \[\d+–\d+\]|-)`
	if n := len(regexp.MustCompile(`(?m)^\s+[a-z_]+\.[a-z_.]+\s+`+cell+`\s+`+cell+`\s+`+cell+`\s*$`).FindAllString(out, -1)); n != 10 {
		view := out
		if i := strings.Index(view, "-- Partner view"); i >= 0 {
			view = view[i:min(len(view), i+4000)]
		}
		t.Errorf("the partner view shows %d features with contracted, trial and beta values and intervals; want 10:\n%s", n, view)
	}
	if regexp.MustCompile(`-\d+ \[|\[-\d`).MatchString(out) || strings.Contains(out, "TERMINATED") {
		t.Error("the partner view shows a negative value or interval, or a terminated column")
	}
	if m := regexp.MustCompile(`holds (\d+) of the true top-10 .*Spearman ρ = (-?[\d.]+|NaN) over it, median relative error of its totals ([\d.]+)%`).FindStringSubmatch(out); m == nil || m[2] == "NaN" {
		t.Errorf("the distance from the truth: %v", m)
	}
	if m := regexp.MustCompile(`(\d+) of (\d+) windows released`).FindStringSubmatch(out); m == nil || m[1] != m[2] || m[1] == "0" {
		t.Errorf("the aggregator did not release every closed window: %v", m)
	}
	// The reports carry real rows: the ranking of the past days' features, and an audit chain
	// holding every request the demo made (7 reports, one refusal).
	if m := regexp.MustCompile(`reads feature_ranking for service_improvement \((\d+) rows, every value from segments of ≥5 tenants`).FindStringSubmatch(out); m == nil || m[1] == "0" {
		t.Errorf("feature ranking rows: %v", m)
	}
	if m := regexp.MustCompile(`audit log: (\d+) records, hash chain verified`).FindStringSubmatch(out); m == nil || m[1] != "7" {
		t.Errorf("audit chain after the demo's requests: %v", m)
	}
	for _, leak := range []string{"taro.yamada", "山田太郎"} {
		if strings.Contains(out, leak) {
			t.Errorf("demo output repeats content %q", leak)
		}
	}
}

func TestCollectorToken(t *testing.T) {
	out, err := runCLI(t, "collector", "token", "--tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	var tok, line string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "token: "); ok {
			tok = v
		}
		if v, ok := strings.CutPrefix(l, "ingest_tokens entry: "); ok {
			line = v
		}
	}
	if tok == "" || line != collector.TokenHash("acme", tok) {
		t.Fatalf("token %q and entry %q do not match:\n%s", tok, line, out)
	}
	if strings.Contains(line, tok) {
		t.Error("the config line contains the token itself")
	}
	t.Setenv("SHUKEI_COLLECTOR_INGEST_TOKENS", line)
	if _, err := runCLI(t, "config"); err != nil {
		t.Errorf("the printed entry does not validate: %v", err)
	}
}

func TestTenantsAndPolicyCommands(t *testing.T) {
	ownServices(t)
	if out, err := runCLI(t, "migrate"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := runCLI(t, "tenants", "add", "--tenant", "acme", "--status", "trial", "--edition", "standard", "--size-band", "s")
	if err != nil || !strings.Contains(out, "ingest token (shown once): shk_") {
		t.Fatalf("tenants add: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "tenants", "add", "--tenant", "acme", "--status", "trial", "--edition", "standard", "--size-band", "s"); err == nil {
		t.Error("adding the same tenant twice succeeded")
	}
	if out, err := runCLI(t, "tenants", "set", "--tenant", "acme", "--status", "gold"); err == nil {
		t.Errorf("an unknown status was accepted:\n%s", out)
	}
	if _, err := runCLI(t, "tenants", "consent", "--tenant", "acme", "--purpose", "external_consented", "--at", "2026-01-01T00:00:00Z"); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "tenants", "list")
	if err != nil || !strings.Contains(out, "acme") || !strings.Contains(out, "+external_consented@v1") {
		t.Fatalf("tenants list: %v\n%s", err, out)
	}

	ev := `{"event_id":"3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f","tenant_id":"acme","occurred_at":"2026-06-01T10:00:00Z",
"schema":"settings/v1","source":"web","user":"u-1","client":{"os":"windows","os_version":"11","device_kind":"desktop"},
"data":{"setting_key":"notification.digest","value":"weekly","customization_present":true,"customization_count":2}}`
	file := t.TempDir() + "/event.json"
	if err := os.WriteFile(file, []byte(ev), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "policy", "explain", file)
	if err != nil {
		t.Fatalf("policy explain: %v\n%s", err, out)
	}
	// Settings serve follow-up (3(1)-4) but are not needed for support (3(1)-1); the consent
	// given in January covers June's data for external sharing with consent (3(2)-1).
	for _, want := range []string{"follow_up", "granted", "3(1)-1", "not needed for support", "external_consented"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy explain lacks %q:\n%s", want, out)
		}
	}
	if out, err := runCLI(t, "policy", "check"); err != nil || !strings.Contains(out, "ok  v1") {
		t.Errorf("policy check: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "policy", "export", "--format", "fides"); err != nil || !strings.Contains(out, "data_use:") {
		t.Errorf("policy export: %v\n%s", err, out)
	}
}

func TestPrincipalsAndAuditCommands(t *testing.T) {
	ownServices(t)
	if out, err := runCLI(t, "migrate"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := runCLI(t, "principals", "add", "--id", "acme-research", "--kind", "contractor", "--purposes", "interview_selection",
		"--contract-ref", "C-2026-7", "--expires", "2027-03-31")
	if err != nil || !strings.Contains(out, "token (shown once): shq_") {
		t.Fatalf("principals add: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "principals", "add", "--id", "nocontract", "--kind", "contractor", "--purposes", "marketing"); err == nil {
		t.Errorf("a contractor without contract reference and expiry was accepted:\n%s", out)
	}
	if _, err := runCLI(t, "principals", "disable", "--id", "acme-research"); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "principals", "list")
	if err != nil || !strings.Contains(out, "acme-research") || !strings.Contains(out, "C-2026-7") || !strings.Contains(out, "2027-03-31") || !strings.Contains(out, "true") {
		t.Fatalf("principals list: %v\n%s", err, out)
	}
	out, err = runCLI(t, "audit", "verify")
	if err != nil || !strings.Contains(out, "0 records, chain intact") {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	out, err = runCLI(t, "audit", "report", "--principal", "acme-research", "--month", "2026-11")
	if err != nil || !strings.Contains(out, "0 requests allowed (0 rows), 0 denied") {
		t.Fatalf("audit report: %v\n%s", err, out)
	}
}

func TestTicketCommands(t *testing.T) {
	ownServices(t)
	if out, err := runCLI(t, "migrate"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := runCLI(t, "tenants", "add", "--tenant", "acme", "--status", "contracted", "--edition", "standard", "--size-band", "m"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := runCLI(t, "tenants", "ticket", "open", "--tenant", "acme", "--ticket", "SUP-1", "--ttl", "14d", "--by", "helpdesk")
	if err != nil || !strings.Contains(out, "ticket SUP-1 of acme open from") {
		t.Fatalf("ticket open: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "tenants", "ticket", "open", "--tenant", "nobody", "--ticket", "SUP-2"); err == nil {
		t.Errorf("a ticket for an unknown tenant was opened:\n%s", out)
	}
	out, err = runCLI(t, "tenants", "ticket", "list", "--tenant", "acme")
	if err != nil || !regexp.MustCompile(`acme\s+SUP-1\s+open\s+\S+\s+\S+\s+helpdesk`).MatchString(out) {
		t.Fatalf("ticket list: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "tenants", "ticket", "close", "--tenant", "acme", "--ticket", "SUP-1"); err != nil || !strings.Contains(out, "closed at") {
		t.Fatalf("ticket close: %v\n%s", err, out)
	}
	out, _ = runCLI(t, "tenants", "ticket", "list")
	if !regexp.MustCompile(`acme\s+SUP-1\s+closed`).MatchString(out) {
		t.Errorf("closed ticket listed as:\n%s", out)
	}
}

// shukei query --openapi prints the document kept in the repository.
func TestQueryOpenAPI(t *testing.T) {
	out, err := runCLI(t, "query", "--openapi")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../query/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Error("shukei query --openapi differs from query/openapi.json")
	}
}

func TestPolicyActivateAndStatus(t *testing.T) {
	ownServices(t)
	if out, err := runCLI(t, "migrate"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := runCLI(t, "policy", "status")
	if err != nil || !regexp.MustCompile(`v1\s+2022-08-01\s+not needed\s+the beginning`).MatchString(out) || !regexp.MustCompile(`v2\s+\S+\s+required\s+not activated`).MatchString(out) {
		t.Fatalf("policy status before: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "policy", "activate", "2", "--at", "2020-01-01T00:00:00Z"); err == nil || !strings.Contains(err.Error(), "in the past") {
		t.Errorf("activation in the past: %v\n%s", err, out)
	}
	at := time.Now().UTC().Add(time.Hour).Truncate(time.Second).Format(time.RFC3339)
	out, err = runCLI(t, "policy", "activate", "v2", "--at", at, "--by", "dpo")
	if err != nil || !strings.Contains(out, "policy v2 in force from "+at) {
		t.Fatalf("policy activate: %v\n%s", err, out)
	}
	out, err = runCLI(t, "policy", "status")
	if err != nil || !regexp.MustCompile(`v2\s+\S+\s+required\s+`+regexp.QuoteMeta(at)).MatchString(out) {
		t.Errorf("policy status after: %v\n%s", err, out)
	}
}

func TestRetentionCommands(t *testing.T) {
	ownServices(t)
	if out, err := runCLI(t, "migrate"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, id := range []string{"ended", "active"} {
		if out, err := runCLI(t, "tenants", "add", "--tenant", id, "--status", "contracted", "--edition", "standard", "--size-band", "m"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, err := runCLI(t, "tenants", "ticket", "open", "--tenant", id, "--ticket", "T-1"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	out, err := runCLI(t, "retention", "verify", "--tenant", "ended")
	if err != nil || !regexp.MustCompile(`\b[1-9]\d* rows of ended left`).MatchString(out) {
		t.Fatalf("verify before: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "tenants", "set", "--tenant", "ended", "--status", "terminated", "--contract-end", "2026-01-31"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err = runCLI(t, "retention", "run")
	if err != nil || !regexp.MustCompile(`deleted tenant ended: \d+ rows in \d+ tables, pseudonymisation root destroyed \(audit record #1\)`).MatchString(out) || strings.Contains(out, "tenant active") {
		t.Fatalf("retention run: %v\n%s", err, out)
	}
	out, err = runCLI(t, "retention", "verify", "--tenant", "ended")
	if err != nil || !strings.Contains(out, "0 rows of ended left in") {
		t.Fatalf("verify after: %v\n%s", err, out)
	}
	out, _ = runCLI(t, "retention", "verify", "--tenant", "active")
	if strings.Contains(out, "0 rows of active left") {
		t.Errorf("the active tenant was deleted:\n%s", out)
	}
	if out, err := runCLI(t, "audit", "verify"); err != nil || !strings.Contains(out, "1 records, chain intact") {
		t.Errorf("audit verify: %v\n%s", err, out)
	}
}

// A rollout seen through 'policy explain': after v2's activation, a tenant that consented to
// it is tagged under v2 (with the use v2 adds), one that did not stays on v1, and data collected
// before the activation or the consent keeps v1's purposes.
func TestPolicyExplainAfterRollout(t *testing.T) {
	ownServices(t)
	if out, err := runCLI(t, "migrate"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for _, id := range []string{"consenting", "other"} {
		if out, err := runCLI(t, "tenants", "add", "--tenant", id, "--status", "contracted", "--edition", "standard", "--size-band", "m"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	for _, p := range []string{"policy", "external_consented"} {
		if out, err := runCLI(t, "tenants", "consent", "--tenant", "consenting", "--purpose", p, "--version", "2", "--at", now.Format(time.RFC3339)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	if out, err := runCLI(t, "policy", "activate", "2", "--at", now.Add(5*time.Second).Format(time.RFC3339)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ev := filepath.Join(t.TempDir(), "op.json")
	if err := os.WriteFile(ev, []byte(`{"event_id":"7d1f3c0e-8a4b-4c2d-9e6f-0a1b2c3d4e5f","tenant_id":"consenting","occurred_at":"`+now.Format(time.RFC3339)+
		`","schema":"operation/v1","source":"web-app","user":"u-1","client":{"os":"windows","os_version":"11","device_kind":"desktop"},`+
		`"data":{"operation_id":"record.save","app_id":"sheets","result_code":"ok","request_id":"0123456789abcdef0123"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Hour).Format(time.RFC3339)
	out, err := runCLI(t, "policy", "explain", ev, "--tenant", "consenting", "--at", later)
	if err != nil || !strings.Contains(out, "policy v2 applies") || !regexp.MustCompile(`external_consented\s+granted`).MatchString(out) {
		t.Errorf("consenting tenant after the activation: %v\n%s", err, out)
	}
	out, err = runCLI(t, "policy", "explain", ev, "--tenant", "other", "--at", later)
	if err != nil || !strings.Contains(out, "policy v1 applies") || !strings.Contains(out, "no consent recorded for policy v2") || !regexp.MustCompile(`external_consented\s+refused`).MatchString(out) {
		t.Errorf("tenant without consent: %v\n%s", err, out)
	}
	out, err = runCLI(t, "policy", "explain", ev, "--tenant", "consenting", "--at", now.Add(-time.Hour).Format(time.RFC3339))
	if err != nil || !strings.Contains(out, "policy v1 applies") {
		t.Errorf("data collected before the activation and the consent: %v\n%s", err, out)
	}
}

func TestLoadgenThroughCollectorAndDirect(t *testing.T) {
	ownServices(t)
	for _, c := range [][]string{{"migrate"}, {"topics"}} {
		if out, err := runCLI(t, c...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SHUKEI_COLLECTOR_LISTEN", addr)
	t.Setenv("SHUKEI_COLLECTOR_OPS_LISTEN", "127.0.0.1:0")
	t.Setenv("SHUKEI_REGISTRY_REFRESH", "200ms")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := newRoot()
		root.SetArgs([]string{"collector"})
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		done <- root.ExecuteContext(ctx)
	}()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("collector did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	args := []string{"loadgen", "--tenants", "30", "--events", "3000", "--days", "3", "--bad-share", "0.05", "--collector", "http://" + addr, "--tokens-file", tokens}
	out, err := runCLI(t, args...)
	re := regexp.MustCompile(`sent 3000 events to the collector in \S+ \(\d+ events/s\): accepted (\d+), refused (\d+) \((.+)\)`)
	m := re.FindStringSubmatch(out)
	if err != nil || m == nil || !strings.Contains(out, "tenants: 30 (30 newly registered)") {
		t.Fatalf("loadgen: %v\n%s", err, out)
	}
	acc, _ := strconv.Atoi(m[1])
	ref, _ := strconv.Atoi(m[2])
	if acc+ref != 3000 || ref < 50 || !strings.Contains(m[3], "input_data.email") {
		t.Errorf("accepted %d + refused %d (%s)", acc, ref, m[3])
	}
	// A second run reuses the tokens it kept and sends the same events (same seed).
	out, err = runCLI(t, args...)
	if m2 := re.FindStringSubmatch(out); err != nil || m2 == nil || m2[1] != m[1] || !strings.Contains(out, "(0 newly registered)") {
		t.Errorf("second run: %v\n%s", err, out)
	}
	out, err = runCLI(t, "loadgen", "--tenants", "30", "--events", "2000", "--direct", "--tokens-file", tokens)
	if err != nil || !strings.Contains(out, "sent 2000 events to Kafka") || !strings.Contains(out, "accepted 2000") {
		t.Errorf("direct: %v\n%s", err, out)
	}
}

// A mistyped subcommand of a command group fails instead of printing the group's help and
// exiting 0 (a script would believe 'shukei tenants delet X' had deleted X).
func TestUnknownSubcommandFails(t *testing.T) {
	for _, args := range [][]string{{"tenants", "delet", "x"}, {"retention", "runn"}, {"tenants", "token", "revok"}} {
		if out, err := runCLI(t, args...); err == nil {
			t.Errorf("shukei %v exited 0:\n%s", args, out)
		}
	}
	if _, err := runCLI(t, "tenants"); err != nil {
		t.Errorf("shukei tenants (no subcommand) should print its help: %v", err)
	}
}
