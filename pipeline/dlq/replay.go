package dlq

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"sort"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/ops"
)

// NilUser is the user a replayed user-level event gets when its kept payload has none (the
// raw user was dropped by policy): the processor pseudonymises it like any user, so all such
// events of a tenant count as one unknown user per pseudonymisation period.
const NilUser = "00000000-0000-0000-0000-000000000000"

// tenantProfile is the one tenant-level schema: its events carry no user.
const tenantProfile = "tenant_profile/v1"

// Why a record is not replayed.
const (
	SkipMalformed     = "malformed_record"    // the DLQ record could not be parsed
	SkipResent        = "resent_copy"         // a re-sent copy of a record already read (same key)
	SkipLegacy        = "legacy_record"       // no kept header: may hold raw content, never replayed
	SkipNotKept       = "payload_not_kept"    // metadata only (content, no structure, duplicates)
	SkipHashed        = "payload_hashed"      // the payload holds keyed hashes: incomplete
	SkipNoEventID     = "no_event_id"         // no valid event_id: "at most once" cannot be kept
	SkipNoTenant      = "no_tenant"           // no valid tenant_id: no key for the raw topic
	SkipMismatch      = "header_mismatch"     // payload and headers disagree on event or tenant
	SkipDuplicate     = "duplicate_in_replay" // an event id this run already replays
	SkipAlreadyStored = "already_stored"      // the event id is in <db>.events
)

// Candidate is a record that passed the eligibility rule: what would be written to the raw
// topic.
type Candidate struct {
	Record  Record
	EventID string
	Tenant  string
	Value   []byte // the payload, with the nil user added when NilUser is set
	NilUser bool
}

// Prepare applies the eligibility rule to one record: a kept, complete (no Marker anywhere,
// keys included) JSON object with a valid event_id and tenant_id agreeing with the headers.
// A user-level event without a user gets the nil user. It returns the skip reason, or "".
func Prepare(r Record) (Candidate, string) {
	switch r.Kept {
	case KeptPayload:
	case KeptLegacy:
		return Candidate{}, SkipLegacy
	default:
		return Candidate{}, SkipNotKept
	}
	if bytes.Contains(r.Payload, []byte(Marker)) {
		return Candidate{}, SkipHashed
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.Payload, &top); err != nil || top == nil {
		return Candidate{}, SkipNotKept // Parse let only JSON objects through
	}
	// The marker may also hide behind JSON escapes: look at every decoded key and string.
	var all any
	dec := json.NewDecoder(bytes.NewReader(r.Payload))
	dec.UseNumber()
	if err := dec.Decode(&all); err != nil || holdsMarker(all) {
		return Candidate{}, SkipHashed
	}
	str := func(k string) (string, bool) {
		raw, ok := top[k]
		if !ok {
			return "", false
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	}
	id, _ := str("event_id")
	if !event.IsEventID(id) {
		return Candidate{}, SkipNoEventID
	}
	tenant, _ := str("tenant_id")
	if !event.IsID(tenant) {
		return Candidate{}, SkipNoTenant
	}
	if r.EventID != "" && r.EventID != id || r.Tenant != "" && r.Tenant != tenant {
		return Candidate{}, SkipMismatch
	}
	c := Candidate{Record: r, EventID: id, Tenant: tenant, Value: r.Payload}
	schema, hasSchema := str("schema")
	if _, hasUser := top["user"]; hasSchema && schema != tenantProfile && !hasUser {
		c.Value, c.NilUser = withNilUser(r.Payload, len(top) > 0), true
	}
	return c, ""
}

// withNilUser adds "user": NilUser as the first member of the object, leaving every other
// byte of the payload as it was.
func withNilUser(obj []byte, nonEmpty bool) []byte {
	t := bytes.TrimSpace(obj)
	out := make([]byte, 0, len(t)+64)
	out = append(out, `{"user":"`+NilUser+`"`...)
	if nonEmpty {
		out = append(out, ',')
	}
	return append(out, t[1:]...)
}

func holdsMarker(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.Contains(x, Marker)
	case []any:
		for _, e := range x {
			if holdsMarker(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range x {
			if strings.Contains(k, Marker) || holdsMarker(e) {
				return true
			}
		}
	}
	return false
}

// ReplayOptions choose what to replay.
type ReplayOptions struct {
	Reason string    // only records of this reason ("" all)
	Tenant string    // only records of this tenant ("" all)
	Since  time.Time // only records written to the DLQ at or after this time (zero: all)
	DryRun bool      // decide and report, audit, but write nothing to the raw topic
	// Principal is who runs the replay, for the audit log; OperatorPrincipal() when empty.
	Principal string
}

func (o ReplayOptions) check() error {
	var errs []error
	if o.Reason != "" && !validReason(o.Reason) {
		errs = append(errs, fmt.Errorf("--reason %s is not a reason code (such as unknown_tenant; 'shukei dlq stats' lists them)", quoteShort(o.Reason)))
	}
	if o.Tenant != "" && !event.IsID(o.Tenant) {
		errs = append(errs, fmt.Errorf("--tenant %s is not a tenant id", quoteShort(o.Tenant)))
	}
	return errors.Join(errs...)
}

func (o ReplayOptions) matches(r Record) bool {
	return (o.Reason == "" || r.Reason == o.Reason) && (o.Tenant == "" || r.Tenant == o.Tenant)
}

// OperatorPrincipal is the audit principal of a person running a command: "operator:" and
// the OS user name.
func OperatorPrincipal() string {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name = os.Getenv("USER")
	}
	if name == "" {
		name = "unknown"
	}
	return "operator:" + name
}

// Replayer re-submits kept DLQ payloads to the raw topic.
type Replayer struct {
	Source   Source
	RawTopic string
	Conn     driver.Conn
	Database string
	// Cluster is clickhouse.cluster: stored event ids are looked up on every shard.
	Cluster string
	// AuditOptions are the audit log's key and sequencer (audit.key_file, audit.topic).
	AuditOptions []audit.Option
	// BatchSize is how many candidates are checked against the event store and written (one
	// synchronous write) at a time (default 500).
	BatchSize int
}

// ReplayResult is the summary of one run. It holds counts and the filters, never content.
type ReplayResult struct {
	DLQTopic string         `json:"dlq_topic"`
	RawTopic string         `json:"raw_topic"`
	Reason   string         `json:"reason,omitempty"`
	Tenant   string         `json:"tenant,omitempty"`
	Since    time.Time      `json:"since,omitzero"`
	DryRun   bool           `json:"dry_run"`
	Read     int            `json:"read"`     // DLQ messages read
	Matched  int            `json:"matched"`  // distinct, well-formed records of the reason and tenant asked for
	Eligible int            `json:"eligible"` // would be (or were) written to the raw topic
	Replayed int            `json:"replayed"` // written to the raw topic (0 on a dry run)
	NilUser  int            `json:"nil_user"` // of the eligible, those given the nil user
	Skipped  map[string]int `json:"skipped"`
	// Malformed details SkipMalformed by what was wrong.
	Malformed map[string]int `json:"malformed,omitempty"`
	AuditSeq  uint64         `json:"audit_seq"`
}

// Replay runs one replay: reads the DLQ (bounded), applies the filters and the eligibility
// rule, drops event ids already stored in <db>.events or already in this run, writes the rest
// to the raw topic (key = tenant id, acknowledged by all replicas, synchronously), and appends
// one audit record (also for a dry run, and with decision "failed" when the run failed). The
// result counts what was done even when an error is returned.
func (rp *Replayer) Replay(ctx context.Context, o ReplayOptions) (ReplayResult, error) {
	res := ReplayResult{DLQTopic: rp.Source.Topic, RawTopic: rp.RawTopic, Reason: o.Reason, Tenant: o.Tenant, Since: o.Since, DryRun: o.DryRun,
		Skipped: map[string]int{}, Malformed: map[string]int{}}
	if err := o.check(); err != nil {
		return res, err
	}
	if rp.RawTopic == "" {
		return res, errors.New("no raw topic configured (kafka.raw_topic)")
	}
	if o.Principal == "" {
		o.Principal = OperatorPrincipal()
	}
	// Both tables must be there before anything is written: a replay without its audit record
	// must not happen.
	for _, t := range []string{databases.Store(rp.Database) + ".events", databases.Audit(rp.Database) + ".audit_log"} {
		var n uint64
		if err := rp.Conn.QueryRow(ctx, "SELECT count() FROM "+t).Scan(&n); err != nil {
			return res, fmt.Errorf("read %s: %w (is the schema applied? 'shukei migrate')", t, err)
		}
	}

	err := rp.run(ctx, o, &res)
	seq, aerr := rp.audit(ctx, o, res, err)
	res.AuditSeq = seq
	if aerr != nil {
		if res.Replayed > 0 {
			aerr = fmt.Errorf("%d events were replayed but the run's audit record could not be written: %w; record the run by hand", res.Replayed, aerr)
		}
		return res, errors.Join(err, aerr)
	}
	return res, err
}

// run reads the DLQ and replays its candidates, in DLQ order, one per event id. Candidates are
// handled a chunk at a time (checked against the event store, then written), so memory stays
// bounded however long the DLQ is.
func (rp *Replayer) run(ctx context.Context, o ReplayOptions, res *ReplayResult) error {
	seenKey := map[Position]bool{}
	seenID := map[string]bool{}
	var pending []Candidate
	flush := func() error {
		cands, err := rp.dropStored(ctx, pending, res)
		pending = pending[:0]
		if err != nil {
			return err
		}
		res.Eligible += len(cands)
		for _, c := range cands {
			if c.NilUser {
				res.NilUser++
			}
		}
		if o.DryRun {
			return nil
		}
		return rp.write(ctx, cands, res)
	}
	_, err := rp.Source.Scan(ctx, o.Since, nil, func(m kafka.Message) error {
		res.Read++
		r, err := Parse(m)
		if err != nil {
			res.Skipped[SkipMalformed]++
			res.Malformed[err.(*Malformed).Code]++
			return nil
		}
		if !o.matches(r) {
			return nil
		}
		if seenKey[r.Key] {
			res.Skipped[SkipResent]++
			return nil
		}
		seenKey[r.Key] = true
		res.Matched++
		c, skip := Prepare(r)
		if skip == "" && seenID[c.EventID] {
			skip = SkipDuplicate
		}
		if skip != "" {
			res.Skipped[skip]++
			return nil
		}
		seenID[c.EventID] = true
		pending = append(pending, c)
		if len(pending) >= rp.chunk() {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

func (rp *Replayer) chunk() int {
	if rp.BatchSize > 0 {
		return rp.BatchSize
	}
	return 500
}

// dropStored removes the candidates whose event id the event store already holds. The ids are
// checked canonical UUIDs, so they are written into the query (ClickHouse 18.16 reads a bound
// slice as an array, not as an IN list).
func (rp *Replayer) dropStored(ctx context.Context, cands []Candidate, res *ReplayResult) ([]Candidate, error) {
	stored := map[string]bool{}
	const chunk = 1000 // ids a query: ~40 kB, well under max_query_size
	for i := 0; i < len(cands); i += chunk {
		part := cands[i:min(i+chunk, len(cands))]
		lits := make([]string, len(part))
		for j, c := range part {
			if !event.IsUUID(c.EventID) { // Prepare guarantees it; the query depends on it
				return nil, fmt.Errorf("internal: event id of %s is not a UUID", c.Record.Key)
			}
			lits[j] = "'" + c.EventID + "'"
		}
		rows, err := rp.Conn.Query(ctx, "SELECT DISTINCT toString(event_id) FROM "+databases.Across(rp.Cluster, rp.Database+".events")+" WHERE toString(event_id) IN ("+strings.Join(lits, ",")+")")
		if err != nil {
			return nil, fmt.Errorf("look up stored event ids in %s.events: %w", rp.Database, err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			stored[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	out := cands[:0]
	for _, c := range cands {
		if stored[c.EventID] {
			res.Skipped[SkipAlreadyStored]++
			continue
		}
		out = append(out, c)
	}
	return out, nil
}

// ReplayHeader names, on a replayed message, the DLQ key it came from (a position, no content).
const ReplayHeader = "shukei_replay_of"

func (rp *Replayer) write(ctx context.Context, cands []Candidate, res *ReplayResult) error {
	if len(cands) == 0 {
		return nil
	}
	batch := rp.chunk()
	w := &kafka.Writer{
		Addr:         kafka.TCP(rp.Source.Brokers...),
		Topic:        rp.RawTopic,
		Balancer:     &kafka.Murmur2Balancer{}, // as the collector: a tenant's events share a partition
		RequiredAcks: kafka.RequireAll,
		Async:        false,
		BatchSize:    batch,
		BatchBytes:   64 << 20,
		BatchTimeout: 5 * time.Millisecond,
		MaxAttempts:  3,
	}
	defer w.Close()
	for i := 0; i < len(cands); i += batch {
		part := cands[i:min(i+batch, len(cands))]
		msgs := make([]kafka.Message, len(part))
		for j, c := range part {
			msgs[j] = kafka.Message{Key: []byte(c.Tenant), Value: c.Value,
				Headers: []kafka.Header{{Key: ReplayHeader, Value: []byte(c.Record.Key.String())}}}
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			var werrs kafka.WriteErrors
			if errors.As(err, &werrs) {
				res.Replayed += len(part) - werrs.Count()
			}
			hint := "running the replay again skips those the processor stored and relies on its event-id dedupe for the rest"
			if errors.Is(err, kafka.UnknownTopicOrPartition) {
				hint = "the topic does not exist: create it with 'shukei topics', or check kafka.raw_topic"
			}
			return fmt.Errorf("write to the raw topic %s: %w (%d events were written before; %s)", rp.RawTopic, err, res.Replayed, hint)
		}
		res.Replayed += len(part)
	}
	return nil
}

// audit appends the run's one audit record.
func (rp *Replayer) audit(ctx context.Context, o ReplayOptions, res ReplayResult, runErr error) (uint64, error) {
	params := fmt.Sprintf("dlq_topic=%s raw_topic=%s reason=%s tenant=%s since=%s dry_run=%t",
		res.DLQTopic, res.RawTopic, orAny(o.Reason), orAny(o.Tenant), sinceText(o.Since), o.DryRun)
	sum := sha256.Sum256([]byte(params))
	decision, outcome := audit.Allowed, ""
	if runErr != nil {
		decision, outcome = audit.Failed, " failed"
	}
	reason := fmt.Sprintf("dlq replay%s: %s; read=%d matched=%d eligible=%d replayed=%d nil_user=%d skipped: %s",
		outcome, params, res.Read, res.Matched, res.Eligible, res.Replayed, res.NilUser, skippedText(res.Skipped))
	// The audit record is written even when ctx was cancelled mid-run.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	rec, err := audit.New(rp.Conn, rp.Database, rp.AuditOptions...).Append(actx, audit.Record{
		Principal: o.Principal, Kind: "operator", Report: "dlq_replay", ParamsHash: hex.EncodeToString(sum[:]),
		Decision: decision, Reason: reason, Rows: uint64(res.Replayed),
	})
	if err != nil {
		return 0, err
	}
	return rec.Seq, nil
}

func orAny(s string) string {
	if s == "" {
		return "any"
	}
	return s
}

func sinceText(t time.Time) string {
	if t.IsZero() {
		return "any"
	}
	return t.UTC().Format(time.RFC3339)
}

func skippedText(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// ReplayConfigured is 'shukei dlq replay': o's records written since since (ParseSince) are
// replayed from the configured DLQ to the raw topic, checked against the event store of the
// configured database and audited on a connection of its own (Replayer.ReplayTo).
func ReplayConfigured(ctx context.Context, w io.Writer, cfg config.Config, log *slog.Logger, o ReplayOptions, since string, asJSON bool) error {
	var err error
	if o.Since, err = ParseSince(since, time.Now()); err != nil {
		return err
	}
	return ops.WithClickHouse(ctx, cfg.ClickHouse, func(conn driver.Conn) error {
		aopts, err := ops.AuditOptions(cfg, log)
		if err != nil {
			return err
		}
		rp := &Replayer{Source: SourceOf(cfg.Kafka), RawTopic: cfg.Kafka.RawTopic, Conn: conn, Database: cfg.ClickHouse.Database, Cluster: cfg.ClickHouse.Cluster, AuditOptions: aopts}
		return rp.ReplayTo(ctx, w, o, asJSON)
	})
}

// ReplayTo runs one replay (Replay) and writes its result to w, as indented JSON or its summary
// (WriteSummary) — also of a run that failed once it read or audited something. A failure is
// returned as "dlq replay: …" ('shukei dlq replay').
func (rp *Replayer) ReplayTo(ctx context.Context, w io.Writer, o ReplayOptions, asJSON bool) error {
	res, err := rp.Replay(ctx, o)
	if res.AuditSeq > 0 || res.Read > 0 || err == nil {
		if asJSON {
			if jerr := writeJSON(w, res); jerr != nil {
				return errors.Join(err, jerr)
			}
		} else {
			res.WriteSummary(w)
		}
	}
	if err != nil {
		return fmt.Errorf("dlq replay: %w", err)
	}
	return nil
}

// WriteSummary prints a replay's summary.
func (res ReplayResult) WriteSummary(w io.Writer) {
	verb := "replayed"
	if res.DryRun {
		verb = "would replay (dry run, nothing written)"
	}
	fmt.Fprintf(w, "dlq replay from %s to %s: reason %s, tenant %s, since %s\n", res.DLQTopic, res.RawTopic, orAny(res.Reason), orAny(res.Tenant), sinceText(res.Since))
	fmt.Fprintf(w, "  read      %d DLQ messages\n", res.Read)
	fmt.Fprintf(w, "  matched   %d records\n", res.Matched)
	fmt.Fprintf(w, "  eligible  %d\n", res.Eligible)
	if res.DryRun {
		fmt.Fprintf(w, "  %s: %d\n", verb, res.Eligible)
	} else {
		fmt.Fprintf(w, "  replayed  %d\n", res.Replayed)
	}
	if res.NilUser > 0 {
		fmt.Fprintf(w, "  %d of them without a kept user, given the nil user (one unknown user per tenant and period)\n", res.NilUser)
	}
	if len(res.Skipped) == 0 {
		fmt.Fprintln(w, "  skipped   none")
	} else {
		keys := make([]string, 0, len(res.Skipped))
		for k := range res.Skipped {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  skipped   %-20s %d%s\n", k, res.Skipped[k], skipHelp[k])
		}
	}
	if len(res.Malformed) > 0 {
		fmt.Fprintf(w, "  malformed records by problem: %s\n", skippedText(res.Malformed))
	}
	if res.AuditSeq > 0 {
		fmt.Fprintf(w, "  audit record #%d\n", res.AuditSeq)
	}
}

var skipHelp = map[string]string{
	SkipHashed:        "  (refused values were replaced by keyed hashes: the event is incomplete)",
	SkipNotKept:       "  (metadata only: nothing to replay)",
	SkipLegacy:        "  (written before payloads were content-free: never replayed)",
	SkipAlreadyStored: "  (the event store already holds the event id)",
	SkipDuplicate:     "  (the same event id came earlier in this run)",
	SkipResent:        "  (a re-sent copy of a DLQ record already read)",
	SkipMalformed:     "  (the DLQ record could not be parsed; see below)",
}
