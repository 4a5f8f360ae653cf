package processor

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

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

// loadState reads the store's high-water marks for the given partitions.
func loadState(ctx context.Context, conn driver.Conn, db string, partitions []int) (map[int]*partitionState, error) {
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
	for _, p := range partitions {
		st := out[p]
		rows, err := conn.Query(ctx, "SELECT kafka_offset FROM "+db+".events WHERE kafka_partition = ? AND kafka_offset >= ?", uint16(p), uint64(st.lo+1))
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

const eventsInsert = `INSERT INTO %s.events (event_id, tenant_id, occurred_at, ingested_at, category, schema_version, source,
 user_pseudonym, os, os_major, device_kind, contract_status, edition, size_band, purposes, policy_version,
 app_id, action, feature_id, use_count, records_registered, setting_key, setting_value, customization_present,
 customization_count, operation_id, result_code, request_id, user_count, organization_count, client_kind, browser,
 kafka_partition, kafka_offset)`

// insertEvents writes rows in one insert. ingested is the same for the whole batch, so the
// batch is one part of one partition: all of it is stored or none. Columns are appended as
// whole slices: appending row by row costs a reflective conversion per value.
func insertEvents(ctx context.Context, conn driver.Conn, db string, rows []row, ingested time.Time) error {
	b, err := conn.PrepareBatch(ctx, fmt.Sprintf(eventsInsert, db))
	if err != nil {
		return err
	}
	n := len(rows)
	var (
		eventID, tenant, category, source, pseudo, osName, device, status, edition, sizeBand                        = mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n)
		appID, action, featureID, settingKey, settingValue, operationID, resultCode, requestID, clientKind, browser = mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n)
		occurred, ingestedCol                                                                                       = mk[time.Time](n), mk[time.Time](n)
		schemaVersion, custPresent                                                                                  = mk[uint8](n), mk[uint8](n)
		osMajor, purposes, policyVersion, partition                                                                 = mk[uint16](n), mk[uint16](n), mk[uint16](n), mk[uint16](n)
		useCount, records, custCount, users, orgs                                                                   = mk[uint32](n), mk[uint32](n), mk[uint32](n), mk[uint32](n), mk[uint32](n)
		offset                                                                                                      = mk[uint64](n)
	)
	for i, r := range rows {
		ev := r.t.Event
		switch d := ev.Data.(type) {
		case *event.AppAccess:
			appID[i], action[i] = d.AppID, string(d.Action)
		case *event.FeatureUse:
			featureID[i], useCount[i], records[i] = d.FeatureID, uint32(d.Count), uint32(d.RecordsRegistered)
		case *event.Settings:
			settingKey[i], settingValue[i], custCount[i] = d.SettingKey, settingText(d.Value), uint32(d.CustomizationCount)
			if d.CustomizationPresent {
				custPresent[i] = 1
			}
		case *event.Operation:
			operationID[i], appID[i], resultCode[i], requestID[i] = d.OperationID, d.AppID, d.ResultCode, d.RequestID
		case *event.TenantProfile:
			users[i], orgs[i] = uint32(d.UserCount), uint32(d.OrganizationCount)
		case *event.ClientEnv:
			clientKind[i], browser[i] = string(d.ClientKind), string(d.Browser)
		}
		t := r.t.Tenant
		eventID[i], tenant[i], occurred[i], ingestedCol[i] = ev.EventID, ev.TenantID, ev.OccurredAt.UTC(), ingested
		category[i], schemaVersion[i], source[i] = decision.Category(ev.Schema), decision.SchemaVersion(ev.Schema), ev.Source
		pseudo[i], osName[i], osMajor[i], device[i] = string(r.t.Pseudonym[:]), string(ev.Client.OS), decision.OSMajor(ev.Client.OSVersion), string(ev.Client.DeviceKind)
		status[i], edition[i], sizeBand[i], purposes[i], policyVersion[i] = t.Status, t.Edition, t.SizeBand, r.t.Purposes, r.t.PolicyVersion
		partition[i], offset[i] = uint16(r.partition), uint64(r.offset)
	}
	// The order of eventsInsert's column list.
	cols := []any{eventID, tenant, occurred, ingestedCol, category, schemaVersion, source,
		pseudo, osName, osMajor, device, status, edition, sizeBand, purposes, policyVersion,
		appID, action, featureID, useCount, records, settingKey, settingValue, custPresent,
		custCount, operationID, resultCode, requestID, users, orgs, clientKind, browser,
		partition, offset}
	for i, c := range cols {
		if err := b.Column(i).Append(c); err != nil {
			return fmt.Errorf("append column %d: %w", i, err)
		}
	}
	return b.Send()
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

func insertRejections(ctx context.Context, conn driver.Conn, db string, rs []rejected, at time.Time) error {
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
	return b.Send()
}
