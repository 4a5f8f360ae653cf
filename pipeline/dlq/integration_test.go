package dlq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/guard"
)

// eventJSON builds a complete event payload as the processor keeps it: a user-level one without
// user (the raw user was dropped) unless user is given.
func eventJSON(id, tenant, schema, user string, at time.Time) string {
	u := ""
	if user != "" {
		u = `"user":"` + user + `",`
	}
	data, client := `{"feature_id":"app.view.list","count":1,"records_registered":0}`, `"client":{"os":"windows","device_kind":"desktop"},`
	if schema == "tenant_profile/v1" {
		data, client = `{"user_count":12,"organization_count":2}`, ""
	}
	return fmt.Sprintf(`{"event_id":%q,"tenant_id":%q,"occurred_at":%q,"schema":%q,"source":"web-sdk",%s%s"data":%s}`,
		id, tenant, at.UTC().Format(time.RFC3339), schema, u, client, data)
}

// rec is a DLQ record as the processor writes it.
func rec(key, reason, class, field, tenant, schema, eventID, kept, value string, at time.Time) kafka.Message {
	h := []kafka.Header{
		{Key: HeaderReason, Value: []byte(reason)}, {Key: HeaderClass, Value: []byte(class)}, {Key: HeaderField, Value: []byte(field)},
		{Key: HeaderTenant, Value: []byte(tenant)}, {Key: HeaderSchema, Value: []byte(schema)}, {Key: HeaderEventID, Value: []byte(eventID)},
		{Key: HeaderPayloadHMAC, Value: []byte(strings.Repeat("5a", 32))},
	}
	if kept != "" {
		h = append(h, kafka.Header{Key: HeaderKept, Value: []byte(kept)})
	}
	var v []byte
	if value != "" {
		v = []byte(value)
	}
	return kafka.Message{Key: []byte(key), Value: v, Headers: h, Time: at}
}

type fixture struct {
	conn    driver.Conn
	db      string
	brokers []string
	raw     string
	src     Source
	now     time.Time
	ids     map[string]string // record name → event id
	keys    map[string]string // record name → DLQ key
}

// newFixture writes the synthetic DLQ of the integration tests:
//
//	A  unknown_tenant, complete feature_use without user         → replayed with the nil user
//	A' a re-sent copy of A (same key)                             → counted once
//	B  unknown_tenant, complete feature_use with a kept pseudonym → replayed as it is
//	C  unknown_tenant, complete tenant_profile (no user)          → replayed, no user added
//	D  unknown_tenant, its event id already stored                → already_stored
//	K  unknown_tenant, the same event id as A at another position → duplicate_in_replay
//	E  invalid_field, a value replaced by a keyed hash            → payload_hashed
//	F  duplicate_event_id, metadata only                          → payload_not_kept
//	G  input_data.email, metadata only, two days old              → payload_not_kept
//	L  no_purpose without a kept header (legacy)                  → legacy_record
//	M1 a bad key, M2 no class header                              → malformed
func newFixture(t *testing.T) *fixture {
	conn, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	ctx := context.Background()
	if _, err := migrations.Apply(ctx, conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	f := &fixture{conn: conn, db: cfg.ClickHouse.Database, brokers: cfg.Kafka.Brokers, now: time.Now().UTC().Truncate(time.Millisecond),
		ids: map[string]string{}, keys: map[string]string{}}
	f.raw = servicetest.Topic(t, f.brokers, 2)
	f.src = Source{Brokers: f.brokers, Topic: servicetest.Topic(t, f.brokers, 3), Stall: 20 * time.Second}
	for _, n := range []string{"A", "B", "C", "D", "E", "F", "G", "L"} {
		f.ids[n] = uuid.NewString()
	}
	f.ids["K"] = f.ids["A"]
	rawName := "usage.raw"
	for i, n := range []string{"A", "B", "C", "D", "E", "F", "G", "K", "L", "M2"} {
		f.keys[n] = fmt.Sprintf("%s/%d/%d", rawName, i%2, 100+i)
	}
	at, old := f.now.Add(-time.Hour), f.now.Add(-48*time.Hour)
	hashed := strings.Replace(eventJSON(f.ids["E"], "acme", "feature_use/v1", "", at), `"app.view.list"`, `"hmac-sha256:00112233445566778899aabbccddeeff"`, 1)
	msgs := []kafka.Message{
		rec(f.keys["A"], "unknown_tenant", ClassPolicy, "", "acme", "feature_use/v1", f.ids["A"], KeptPayload, eventJSON(f.ids["A"], "acme", "feature_use/v1", "", at), f.now),
		rec(f.keys["B"], "unknown_tenant", ClassPolicy, "", "acme", "feature_use/v1", f.ids["B"], KeptPayload, eventJSON(f.ids["B"], "acme", "feature_use/v1", "0123456789abcdef0123456789abcdef", at), f.now),
		rec(f.keys["C"], "unknown_tenant", ClassPolicy, "", "acme", "tenant_profile/v1", f.ids["C"], KeptPayload, eventJSON(f.ids["C"], "acme", "tenant_profile/v1", "", at), f.now),
		rec(f.keys["D"], "unknown_tenant", ClassPolicy, "", "beta-co", "feature_use/v1", f.ids["D"], KeptPayload, eventJSON(f.ids["D"], "beta-co", "feature_use/v1", "", at), f.now),
		rec(f.keys["E"], "invalid_field", ClassMalformed, "data.feature_id", "acme", "feature_use/v1", f.ids["E"], KeptPayload, hashed, f.now),
		rec(f.keys["F"], ReasonDuplicate, ClassDuplicate, "", "acme", "feature_use/v1", f.ids["F"], KeptMetadata, "", f.now),
		rec(f.keys["G"], "input_data.email", ClassInputData, "data.feature_id", "beta-co", "feature_use/v1", f.ids["G"], KeptMetadata, "", old),
		rec(f.keys["A"], "unknown_tenant", ClassPolicy, "", "acme", "feature_use/v1", f.ids["A"], KeptPayload, eventJSON(f.ids["A"], "acme", "feature_use/v1", "", at), f.now),
		rec(f.keys["K"], "unknown_tenant", ClassPolicy, "", "acme", "feature_use/v1", f.ids["K"], KeptPayload, eventJSON(f.ids["K"], "acme", "feature_use/v1", "", at), f.now),
		rec(f.keys["L"], "no_purpose", ClassPolicy, "", "acme", "feature_use/v1", f.ids["L"], "", `{"user":"raw-user-42"}`, f.now),
		rec("garbage-key", "unknown_tenant", ClassPolicy, "", "acme", "", "", KeptMetadata, "", f.now),
		rec(f.keys["M2"], "unknown_tenant", ClassPolicy, "", "acme", "", "", KeptMetadata, "", f.now),
	}
	msgs[len(msgs)-1].Headers = append(msgs[len(msgs)-1].Headers[:1], msgs[len(msgs)-1].Headers[2:]...) // M2: no class
	w := &kafka.Writer{Addr: kafka.TCP(f.brokers...), Topic: f.src.Topic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	for _, m := range msgs { // one at a time: the copy of A must come after A
		if err := w.WriteMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	f.store(t, "D")
	return f
}

// store puts event ids into <db>.events, as the processor does when it stores an event.
func (f *fixture) store(t *testing.T, names ...string) {
	t.Helper()
	ctx := context.Background()
	b, err := f.conn.PrepareBatch(ctx, "INSERT INTO "+f.db+".events (event_id, tenant_id, occurred_at, ingested_at, category, kafka_partition, kafka_offset)")
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		if err := b.Append(uuid.MustParse(f.ids[n]), "acme", f.now.Truncate(time.Second), f.now.Truncate(time.Second), "feature_use", uint16(0), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

// rawMessages reads the raw topic to its current end.
func (f *fixture) rawMessages(t *testing.T) []kafka.Message {
	t.Helper()
	var out []kafka.Message
	if _, err := (Source{Brokers: f.brokers, Topic: f.raw}).Scan(context.Background(), time.Time{}, nil, func(m kafka.Message) error {
		out = append(out, m)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStatsShowReplayOnRealServices(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// stats
	st, err := CollectStats(ctx, f.src, []Dim{DimReason, DimClass}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Read != 12 || st.Records != 9 || st.Copies != 1 || st.Legacy != 1 || st.MalformedTotal() != 2 ||
		st.Malformed["bad_key"] != 1 || st.Malformed["missing_header.class"] != 1 {
		t.Errorf("stats totals: read %d records %d copies %d legacy %d malformed %v", st.Read, st.Records, st.Copies, st.Legacy, st.Malformed)
	}
	want := []Group{
		{Keys: map[Dim]string{DimReason: "unknown_tenant", DimClass: ClassPolicy}, Records: 5, Kept: 5},
		{Keys: map[Dim]string{DimReason: ReasonDuplicate, DimClass: ClassDuplicate}, Records: 1},
		{Keys: map[Dim]string{DimReason: "input_data.email", DimClass: ClassInputData}, Records: 1},
		{Keys: map[Dim]string{DimReason: "invalid_field", DimClass: ClassMalformed}, Records: 1, Kept: 1},
		{Keys: map[Dim]string{DimReason: "no_purpose", DimClass: ClassPolicy}, Records: 1},
	}
	if !groupsEqual(st.Groups, want) {
		t.Errorf("stats by reason,class:\n%+v\nwant\n%+v", st.Groups, want)
	}
	// --since 24h: G (two days old) is left out, whatever partition it sits in.
	st, err = CollectStats(ctx, f.src, []Dim{DimTenant, DimDay}, f.now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	today := f.now.Format("2006-01-02")
	want = []Group{
		{Keys: map[Dim]string{DimTenant: "acme", DimDay: today}, Records: 7, Kept: 5},
		{Keys: map[Dim]string{DimTenant: "beta-co", DimDay: today}, Records: 1, Kept: 1},
	}
	if !groupsEqual(st.Groups, want) || st.Read != 11 {
		t.Errorf("stats by tenant,day since 24h (read %d):\n%+v\nwant\n%+v", st.Read, st.Groups, want)
	}
	if st, err := CollectStats(ctx, f.src, Dims, f.now.Add(time.Hour)); err != nil || st.Read != 0 || len(st.Groups) != 0 {
		t.Errorf("stats since a future time: %+v, %v", st, err)
	}

	// show
	show := func(name string) (Found, string) {
		t.Helper()
		k, err := ParseKey(f.keys[name])
		if err != nil {
			t.Fatal(err)
		}
		fd, err := Find(ctx, f.src, k)
		if err != nil {
			t.Fatalf("find %s: %v", name, err)
		}
		var b bytes.Buffer
		if err := WriteRecord(&b, fd); err != nil {
			t.Fatal(err)
		}
		return fd, b.String()
	}
	fd, out := show("A")
	if fd.Copies != 1 || fd.Record.EventID != f.ids["A"] || !strings.Contains(out, "\n  \"event_id\": \""+f.ids["A"]+"\"") ||
		!strings.Contains(out, "reason        unknown_tenant") || !strings.Contains(out, "kept          payload") || !strings.Contains(out, "1 re-sent copies") {
		t.Errorf("show A: %+v\n%s", fd, out)
	}
	if _, out := show("F"); !strings.Contains(out, "payload not kept (metadata only)") || !strings.Contains(out, "class         duplicate") {
		t.Errorf("show F:\n%s", out)
	}
	if _, out := show("L"); strings.Contains(out, "raw-user-42") || !strings.Contains(out, "payload not shown") {
		t.Errorf("show L (legacy) prints its value or says nothing:\n%s", out)
	}
	if fd, out := show("M2"); fd.Malformed == nil || fd.Malformed.Code != "missing_header.class" || !strings.Contains(out, "malformed") {
		t.Errorf("show M2: %+v\n%s", fd, out)
	}
	if _, err := Find(ctx, f.src, Position{"usage.raw", 0, 999999}); !errors.Is(err, ErrNotFound) {
		t.Errorf("find a missing key: %v", err)
	}

	// replay
	rp := &Replayer{Source: f.src, RawTopic: f.raw, Conn: f.conn, Database: f.db, BatchSize: 2} // several chunks
	const principal = "operator:dlq-test"
	check := func(name string, res ReplayResult, read, matched, eligible, replayed, nilUser int, skipped map[string]int) {
		t.Helper()
		if res.Read != read || res.Matched != matched || res.Eligible != eligible || res.Replayed != replayed || res.NilUser != nilUser || res.AuditSeq == 0 {
			t.Errorf("%s: %+v; want read %d matched %d eligible %d replayed %d nil_user %d", name, res, read, matched, eligible, replayed, nilUser)
		}
		if fmt.Sprint(res.Skipped) != fmt.Sprint(skipped) {
			t.Errorf("%s: skipped %v, want %v", name, res.Skipped, skipped)
		}
	}
	// 1. A dry run writes nothing, but is audited.
	res, err := rp.Replay(ctx, ReplayOptions{Reason: "unknown_tenant", DryRun: true, Principal: principal})
	if err != nil {
		t.Fatal(err)
	}
	check("dry run", res, 12, 5, 3, 0, 1, map[string]int{SkipMalformed: 2, SkipResent: 1, SkipDuplicate: 1, SkipAlreadyStored: 1})
	if got := f.rawMessages(t); len(got) != 0 {
		t.Fatalf("a dry run wrote %d messages to the raw topic", len(got))
	}

	// 2. The replay writes A (with the nil user), B and C, keyed by tenant; D is stored already
	// and K repeats A's event id.
	res, err = rp.Replay(ctx, ReplayOptions{Reason: "unknown_tenant", Principal: principal})
	if err != nil {
		t.Fatal(err)
	}
	check("replay", res, 12, 5, 3, 3, 1, map[string]int{SkipMalformed: 2, SkipResent: 1, SkipDuplicate: 1, SkipAlreadyStored: 1})
	var summary bytes.Buffer
	res.WriteSummary(&summary)
	for _, w := range []string{"replayed  3", "already_stored", "duplicate_in_replay", "given the nil user"} {
		if !strings.Contains(summary.String(), w) {
			t.Errorf("summary lacks %q:\n%s", w, summary.String())
		}
	}
	got := f.rawMessages(t)
	byID := map[string]map[string]any{}
	for _, m := range got {
		var v map[string]any
		if err := json.Unmarshal(m.Value, &v); err != nil {
			t.Fatalf("replayed value is not JSON: %v", err)
		}
		if string(m.Key) != v["tenant_id"] || string(m.Key) != "acme" {
			t.Errorf("replayed message key %q, tenant %v", m.Key, v["tenant_id"])
		}
		// The processor's decode, validation and guard accept the replayed event (the nil user
		// included): what the processor decides next is the registry's and the policy's call.
		if _, rej := guard.Inspect(m.Value, time.Now(), event.Limits{}.WithDefaults()); rej != nil {
			t.Errorf("the processor's guard refuses a replayed event: %v", rej)
		}
		id, _ := v["event_id"].(string)
		if byID[id] != nil {
			t.Errorf("event %s replayed twice", id)
		}
		byID[id] = v
	}
	if len(got) != 3 || byID[f.ids["A"]] == nil || byID[f.ids["B"]] == nil || byID[f.ids["C"]] == nil {
		t.Fatalf("raw topic holds %d messages, want A, B and C: %v", len(got), byID)
	}
	if u := byID[f.ids["A"]]["user"]; u != NilUser {
		t.Errorf("A was replayed with user %v, want the nil UUID", u)
	}
	if u := byID[f.ids["B"]]["user"]; u != "0123456789abcdef0123456789abcdef" {
		t.Errorf("B's kept user became %v", u)
	}
	if _, has := byID[f.ids["C"]]["user"]; has {
		t.Errorf("the tenant profile C was given a user: %v", byID[f.ids["C"]])
	}

	// 3. Once the processor stored them, a second run replays nothing new.
	f.store(t, "A", "B", "C")
	res, err = rp.Replay(ctx, ReplayOptions{Reason: "unknown_tenant", Principal: principal})
	if err != nil {
		t.Fatal(err)
	}
	check("second replay", res, 12, 5, 0, 0, 0, map[string]int{SkipMalformed: 2, SkipResent: 1, SkipDuplicate: 1, SkipAlreadyStored: 4})
	if n := len(f.rawMessages(t)); n != 3 {
		t.Errorf("the second run wrote: the raw topic holds %d messages, want 3", n)
	}

	// 4. Without filters: every reason a record is not replayable shows up.
	res, err = rp.Replay(ctx, ReplayOptions{DryRun: true, Principal: principal})
	if err != nil {
		t.Fatal(err)
	}
	check("all reasons", res, 12, 9, 0, 0, 0, map[string]int{SkipMalformed: 2, SkipResent: 1, SkipDuplicate: 1, SkipAlreadyStored: 4,
		SkipHashed: 1, SkipNotKept: 2, SkipLegacy: 1})

	// 5. A tenant filter and a bad one.
	res, err = rp.Replay(ctx, ReplayOptions{Tenant: "beta-co", Since: f.now.Add(-24 * time.Hour), DryRun: true, Principal: principal})
	if err != nil {
		t.Fatal(err)
	}
	check("beta-co since 24h", res, 11, 1, 0, 0, 0, map[string]int{SkipMalformed: 2, SkipAlreadyStored: 1})
	if _, err := rp.Replay(ctx, ReplayOptions{Tenant: "Jane Doe", Principal: principal}); err == nil {
		t.Error("a bad --tenant was accepted")
	}

	// Each run added one audit record, and the chain verifies.
	log := audit.New(f.conn, f.db)
	n, err := log.Verify(ctx)
	if err != nil || n != 5 {
		t.Fatalf("audit log: %d records, %v; want 5 that verify", n, err)
	}
	recs, err := log.Report(ctx, principal, f.now.Format("2006-01"))
	if err != nil || len(recs) != 5 {
		t.Fatalf("audit report: %d, %v", len(recs), err)
	}
	for i, r := range recs {
		if r.Report != "dlq_replay" || r.Decision != audit.Allowed || r.Kind != "operator" || len(r.ParamsHash) != 64 {
			t.Errorf("audit record %d: %+v", i, r)
		}
		for _, content := range []string{"app.view.list", "windows", "0123456789abcdef0123456789abcdef", "raw-user-42", f.ids["A"]} {
			if strings.Contains(r.Reason, content) {
				t.Errorf("audit record %d holds content %q: %s", i, content, r.Reason)
			}
		}
	}
	if !strings.Contains(recs[0].Reason, "dry_run=true") || !strings.Contains(recs[0].Reason, "reason=unknown_tenant") || recs[1].Rows != 3 ||
		!strings.Contains(recs[1].Reason, "replayed=3") || !strings.Contains(recs[4].Reason, "tenant=beta-co") {
		t.Errorf("audit records do not summarise the runs:\n%s\n%s\n%s", recs[0].Reason, recs[1].Reason, recs[4].Reason)
	}
}

// A run whose raw topic does not exist fails with a clear error, and the failure is audited.
func TestReplayFailureIsAudited(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rp := &Replayer{Source: f.src, RawTopic: servicetest.Name(t, "missing."), Conn: f.conn, Database: f.db}
	res, err := rp.Replay(ctx, ReplayOptions{Reason: "unknown_tenant", Principal: "operator:dlq-test"})
	if err == nil || !strings.Contains(err.Error(), "write to the raw topic") || !strings.Contains(err.Error(), "shukei topics") {
		t.Fatalf("replay to a missing topic: %+v, %v", res, err)
	}
	if res.Replayed != 0 || res.AuditSeq == 0 {
		t.Errorf("result: %+v", res)
	}
	recs, err := audit.New(f.conn, f.db).Report(ctx, "operator:dlq-test", f.now.Format("2006-01"))
	if err != nil || len(recs) != 1 || recs[0].Decision != audit.Failed || !strings.Contains(recs[0].Reason, "dlq replay failed") {
		t.Errorf("audit of the failed run: %+v, %v", recs, err)
	}
}

// Missing tables are reported before anything is read or written.
func TestReplayNeedsTheSchema(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	rp := &Replayer{Source: Source{Brokers: cfg.Kafka.Brokers, Topic: "unused"}, RawTopic: "unused", Conn: conn, Database: cfg.ClickHouse.Database}
	_, err := rp.Replay(context.Background(), ReplayOptions{})
	if err == nil || !strings.Contains(err.Error(), "shukei migrate") {
		t.Errorf("replay without the schema: %v", err)
	}
	// The same through the configured one call, on a connection of its own.
	var b strings.Builder
	err = ReplayConfigured(context.Background(), &b, cfg, slog.New(slog.DiscardHandler), ReplayOptions{}, "", false)
	if err == nil || !strings.Contains(err.Error(), "shukei migrate") {
		t.Errorf("ReplayConfigured without the schema: %v", err)
	}
}
