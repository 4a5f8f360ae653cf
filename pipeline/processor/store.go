package processor

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/pipeline/decision"
)

// partitionState is what the store already holds for one Kafka partition. A batch is written
// as two atomic inserts, events first, then rejections with a checkpoint row per partition, so
// every offset up to the rejections table's high-water mark is accounted for, and only the
// events of a batch cut short between the two inserts lie beyond it.
type partitionState struct {
	lo   int64          // every offset ≤ lo is accounted for
	done map[int64]bool // offsets > lo already in the events table
}

func (s *partitionState) stored(offset int64) bool {
	return offset <= s.lo || s.done[offset]
}

// loadState reads the store's high-water marks for the given partitions: the checkpoints from
// the rejections (through conn), and the offsets beyond them from the event store on every one
// of replicas — on a cluster, every replica of every shard: an offset lands on one shard, and a
// part on one replica only (not yet replicated) is stored all the same.
func loadState(ctx context.Context, conn driver.Conn, replicas []driver.Conn, db string, partitions []int) (map[int]*partitionState, error) {
	out := map[int]*partitionState{}
	for _, p := range partitions {
		out[p] = &partitionState{lo: -1, done: map[int64]bool{}}
	}
	rows, err := conn.Query(ctx, "SELECT kafka_partition, max(kafka_offset) FROM "+db+".rejections WHERE kafka_partition IN ("+inList(partitions)+") GROUP BY kafka_partition")
	if err != nil {
		return nil, fmt.Errorf("high-water mark of %s.rejections: %w", db, err)
	}
	for rows.Next() {
		var p uint16
		var o uint64
		if err := rows.Scan(&p, &o); err != nil {
			rows.Close()
			return nil, err
		}
		out[int(p)].lo = int64(o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, replica := range replicas {
		for _, p := range partitions {
			st := out[p]
			rows, err := replica.Query(ctx, "SELECT kafka_offset FROM "+db+".events WHERE kafka_partition = ? AND kafka_offset >= ?", uint16(p), uint64(st.lo+1))
			if err != nil {
				return nil, fmt.Errorf("events beyond the checkpoint: %w", err)
			}
			for rows.Next() {
				var o uint64
				if err := rows.Scan(&o); err != nil {
					rows.Close()
					return nil, err
				}
				st.done[int64(o)] = true
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// recentEventIDs returns the event ids stored from the partitions within the horizon, to
// recognise collector retries that arrive after a restart.
func recentEventIDs(ctx context.Context, conn driver.Conn, db string, partitions []int, since time.Time, limit int) ([]string, error) {
	rows, err := conn.Query(ctx, "SELECT toString(event_id) FROM "+db+".events WHERE kafka_partition IN ("+inList(partitions)+") AND ingested_at >= ? ORDER BY ingested_at DESC LIMIT ?",
		since, uint64(limit))
	if err != nil {
		return nil, fmt.Errorf("recent event ids: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// inList renders partition numbers for an IN clause: ClickHouse 18.16 reads a bound slice as
// an array, not as a list. They are integers, so nothing can be injected.
func inList(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// row is one accepted event as stored; t points into the batch's decisions.
type row struct {
	t         *decision.Tagged
	partition int
	offset    int64
}

// rejected is one rejection as stored; r is nil for a batch's checkpoint row.
type rejected struct {
	r         *decision.Rejection
	partition int
	offset    int64
}

const eventsInsertSQL = `INSERT INTO %s.events (event_id, tenant_id, occurred_at, ingested_at, category, schema_version, source,
 user_pseudonym, os, os_major, device_kind, contract_status, edition, size_band, purposes, policy_version,
 app_id, action, feature_id, use_count, records_registered, setting_key, setting_value, customization_present,
 customization_count, operation_id, result_code, request_id, user_count, organization_count, client_kind, browser,
 kafka_partition, kafka_offset, insert_ns)`

// eventsInsert is one batch's insert into the event store, sent a chunk at a time. ClickHouse
// joins the chunks into one block and writes it when the insert ends (min_insert_block_size_rows
// is above the batch size, and the byte threshold is off), so the batch is one part of one
// partition — ingested_at is the same for all of it — and the marts see it as one block.
//
// An insert abandoned half-way (abort, or a connection cut by a crash) is ended by ClickHouse
// 18.16 with the chunks it received, as one part. Exactly-once does not depend on either
// outcome: the store records each event's offset, and what lies beyond the checkpoint is read
// back as done when processing resumes (loadState).
type eventsInsert struct {
	b        driver.Batch
	ingested time.Time
	ns       uint64             // the batch's decision time (insert_ns): tells two inserts of one second apart
	cancel   context.CancelFunc // ends the insert's context (insertContext)
	id       string             // its query id, for the discarder
	disc     *discarder         // nil: the processor cannot discard inserts (abort)
	ended    bool               // committed or aborted
}

// openEventsInsert opens the insert of a batch decided at at: its events are ingested at at's
// second (ingested_at) and carry at in nanoseconds (insert_ns), which tells apart two inserts
// of one partition in one second — the repair of a batch cut short finds the one cut by it
// (repair.go).
func (p *Processor) openEventsInsert(ctx context.Context, conn driver.Conn, at time.Time) (*eventsInsert, error) {
	settings := OneBlockSettings(p.cfg.BatchSize)
	// An open insert holds the table against DROP PARTITION (retention) and DDL. Were the
	// processor paused between two chunks (SIGSTOP, a stalled host), ClickHouse ends the insert
	// when no chunk came for this long, and keeps nothing of it.
	settings["receive_timeout"] = int(insertIdle.Seconds())
	id := p.insertID()
	ictx, cancel := p.insertContext(clickhouse.Context(ctx, clickhouse.WithSettings(settings), clickhouse.WithQueryID(id)))
	b, err := conn.PrepareBatch(ictx, fmt.Sprintf(eventsInsertSQL, p.db))
	if err != nil {
		cancel()
		return nil, err
	}
	return &eventsInsert{b: b, ingested: at.UTC().Truncate(time.Second), ns: uint64(at.UnixNano()), cancel: cancel, id: id, disc: p.disc}, nil
}

// insertContext is the context of an insert: ctx's values (settings), not its cancellation.
// clickhouse-go ends a cancelled context's query by closing its connection, which ClickHouse
// 18.16 takes, mid-insert, for the end of the data: it stores what it received. So when ctx
// ends before the insert did, the insert is closed only once ClickHouse has dropped it
// (insertDropped after its last packet, which was sent before ctx ended), as abort does.
func (p *Processor) insertContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ictx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		select {
		case <-ctx.Done():
			select {
			case <-time.After(insertDropped):
			case <-ictx.Done(): // committed or aborted meanwhile
			}
			cancel()
		case <-ictx.Done():
		}
	}()
	return ictx, cancel
}

// OneBlockSettings are the insert settings under which ClickHouse joins every block an insert of
// up to batchSize rows sends into one, written when the insert ends: no row threshold is reached
// before (a full batch waits for the commit too) and the byte threshold is off.
func OneBlockSettings(batchSize int) clickhouse.Settings {
	return clickhouse.Settings{
		"min_insert_block_size_rows":  batchSize + 1,
		"min_insert_block_size_bytes": 0,
	}
}

// insertIdle is how long ClickHouse waits for the next chunk of an open insert (its
// receive_timeout): longer than a batch collects (batch_timeout, at most 5 s) and than a slow
// decision or a previous batch's commit on a busy machine take.
//
// It is 10 s, not more: ClickHouse 18.16 checks an idle insert against receive_timeout once per
// poll_interval (the server's, 10 s by default; the query's setting does not change it), so a
// receive_timeout of 11 s ends an idle insert only after 20 s, while one of at most 10 s ends it
// within insertDropped (measured: 3, 5 and 10 s all dropped within 2 s of their timeout).
const insertIdle = 10 * time.Second

// insertDropped is how long after its last packet ClickHouse has surely dropped an idle insert.
const insertDropped = insertIdle + 3*time.Second

// add sends rows as one block of the insert; cols is scratch space, reused chunk after chunk.
func (in *eventsInsert) add(rows []row, cols *eventColumns) error {
	for i, c := range cols.fill(rows, in.ingested, in.ns) {
		if err := in.b.Column(i).Append(c); err != nil {
			return fmt.Errorf("append column %d: %w", i, err)
		}
	}
	return in.b.Flush()
}

// commit ends the insert: ClickHouse writes the batch now.
func (in *eventsInsert) commit() error {
	defer in.cancel()
	in.ended = true
	if in.disc != nil {
		defer in.disc.forget(in.id)
	}
	return in.b.Send()
}

// discard makes ClickHouse fail the open insert, keeping nothing of it (discarder); false when
// it cannot, and the insert must be left idle until ClickHouse drops it.
func (in *eventsInsert) discard() bool {
	return !in.ended && in.disc != nil && in.disc.discard(in.id)
}

// abort closes the insert's connection without ending it (see eventsInsert for what ClickHouse
// keeps: discard it first, or wait until ClickHouse dropped it).
func (in *eventsInsert) abort() {
	in.ended = true
	_ = in.b.Abort()
	in.cancel()
	if in.disc != nil {
		in.disc.forget(in.id)
	}
}

// eventColumns are the event store's columns for one chunk, in eventsInsertSQL's column order.
// Columns are appended as whole slices: appending row by row costs a reflective conversion
// per value. The driver copies what is appended, so the slices are reused.
type eventColumns struct {
	eventID, tenant, category, source, pseudo, osName, device, status, edition, sizeBand                        []string
	appID, action, featureID, settingKey, settingValue, operationID, resultCode, requestID, clientKind, browser []string
	occurred, ingested                                                                                          []time.Time
	schemaVersion, custPresent                                                                                  []uint8
	osMajor, purposes, policyVersion, partition                                                                 []uint16
	useCount, records, custCount, users, orgs                                                                   []uint32
	offset, insertNS                                                                                            []uint64
}

func newEventColumns(n int) *eventColumns {
	return &eventColumns{
		mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n),
		mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n),
		mk[time.Time](n), mk[time.Time](n),
		mk[uint8](n), mk[uint8](n),
		mk[uint16](n), mk[uint16](n), mk[uint16](n), mk[uint16](n),
		mk[uint32](n), mk[uint32](n), mk[uint32](n), mk[uint32](n), mk[uint32](n),
		mk[uint64](n), mk[uint64](n),
	}
}

// fill writes rows into the columns and returns them cut to len(rows), in eventsInsertSQL's order.
func (c *eventColumns) fill(rows []row, ingested time.Time, insertNS uint64) []any {
	n := len(rows)
	if n > len(c.eventID) {
		*c = *newEventColumns(n)
	}
	for i, r := range rows {
		// Every column is written for every row: the slices hold the previous chunk's values.
		c.appID[i], c.action[i], c.featureID[i], c.settingKey[i], c.settingValue[i] = "", "", "", "", ""
		c.operationID[i], c.resultCode[i], c.requestID[i], c.clientKind[i], c.browser[i] = "", "", "", "", ""
		c.useCount[i], c.records[i], c.custCount[i], c.users[i], c.orgs[i], c.custPresent[i] = 0, 0, 0, 0, 0, 0
		ev := r.t.Event
		switch d := ev.Data.(type) {
		case *event.AppAccess:
			c.appID[i], c.action[i] = d.AppID, string(d.Action)
		case *event.FeatureUse:
			c.featureID[i], c.useCount[i], c.records[i] = d.FeatureID, uint32(d.Count), uint32(d.RecordsRegistered)
		case *event.Settings:
			c.settingKey[i], c.settingValue[i], c.custCount[i] = d.SettingKey, settingText(d.Value), uint32(d.CustomizationCount)
			if d.CustomizationPresent {
				c.custPresent[i] = 1
			}
		case *event.Operation:
			c.operationID[i], c.appID[i], c.resultCode[i], c.requestID[i] = d.OperationID, d.AppID, d.ResultCode, d.RequestID
		case *event.TenantProfile:
			c.users[i], c.orgs[i] = uint32(d.UserCount), uint32(d.OrganizationCount)
		case *event.ClientEnv:
			c.clientKind[i], c.browser[i] = string(d.ClientKind), string(d.Browser)
		}
		t := r.t.Tenant
		c.eventID[i], c.tenant[i], c.occurred[i], c.ingested[i] = ev.EventID, ev.TenantID, ev.OccurredAt.UTC(), ingested
		c.category[i], c.schemaVersion[i], c.source[i] = decision.Category(ev.Schema), decision.SchemaVersion(ev.Schema), ev.Source
		c.pseudo[i], c.osName[i], c.osMajor[i], c.device[i] = string(r.t.Pseudonym[:]), string(ev.Client.OS), decision.OSMajor(ev.Client.OSVersion), string(ev.Client.DeviceKind)
		c.status[i], c.edition[i], c.sizeBand[i], c.purposes[i], c.policyVersion[i] = t.Status, t.Edition, t.SizeBand, r.t.Purposes, r.t.PolicyVersion
		c.partition[i], c.offset[i], c.insertNS[i] = uint16(r.partition), uint64(r.offset), insertNS
	}
	// The order of eventsInsertSQL's column list.
	return []any{c.eventID[:n], c.tenant[:n], c.occurred[:n], c.ingested[:n], c.category[:n], c.schemaVersion[:n], c.source[:n],
		c.pseudo[:n], c.osName[:n], c.osMajor[:n], c.device[:n], c.status[:n], c.edition[:n], c.sizeBand[:n], c.purposes[:n], c.policyVersion[:n],
		c.appID[:n], c.action[:n], c.featureID[:n], c.useCount[:n], c.records[:n], c.settingKey[:n], c.settingValue[:n], c.custPresent[:n],
		c.custCount[:n], c.operationID[:n], c.resultCode[:n], c.requestID[:n], c.users[:n], c.orgs[:n], c.clientKind[:n], c.browser[:n],
		c.partition[:n], c.offset[:n], c.insertNS[:n]}
}

func mk[T any](n int) []T { return make([]T, n) }

func settingText(v event.SettingValue) string {
	b, err := v.MarshalJSON()
	if err != nil {
		return ""
	}
	s := string(b)
	if len(s) >= 2 && s[0] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}

// insertRejections writes a batch's rejections and checkpoints as one insert; fence, when not
// nil, runs before the rows are sent and before the insert ends, and its error abandons it:
// once rows were sent, after giveUp has made sure ClickHouse keeps nothing of them (closing the
// connection would make it keep them).
func insertRejections(ctx context.Context, conn driver.Conn, db string, rs []rejected, at time.Time, fence func() error, giveUp func()) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".rejections (rejected_at, kafka_partition, kafka_offset, reason, class, field, tenant_id, schema, event_id, payload_hmac, payload)")
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.r == nil { // checkpoint
			if err := b.Append(at, uint16(r.partition), uint64(r.offset), "", "checkpoint", "", "", "", "", "", ""); err != nil {
				return err
			}
			continue
		}
		if err := b.Append(at, uint16(r.partition), uint64(r.offset), string(r.r.Reason), r.r.Class.String(), r.r.Field,
			r.r.Tenant, r.r.Schema, r.r.EventID, r.r.Hash, string(r.r.Payload)); err != nil {
			return fmt.Errorf("append rejection: %w", err)
		}
	}
	if fence != nil {
		if err := fence(); err != nil {
			_ = b.Abort() // nothing was sent yet
			return err
		}
		if err := b.Flush(); err != nil {
			giveUp() // part of the rows may have reached the server
			_ = b.Abort()
			return err
		}
		if err := fence(); err != nil {
			giveUp()
			_ = b.Abort()
			return err
		}
	}
	return b.Send()
}
