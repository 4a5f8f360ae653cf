package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/pipeline/processor"
	"github.com/shukei/shukei/pipeline/topic"
)

// The decoding copy is the processor's second baseline: what any Kafka → ClickHouse loader of
// these events costs. It reads the raw topic (one reader a partition, as the processor), decodes
// each message with encoding/json into the event store's typed columns, and inserts each batch
// into a table of the event store's structure (CREATE TABLE … AS <db>.events: the same types,
// no materialised views). No guard, no validation beyond what decoding does, no pseudonymisation
// (the user id's first 16 bytes fill user_pseudonym), no registry (contract_status is a
// constant), no rejections table, no checkpoints, no offsets committed. Like the processor it
// sends a batch as one insert a chunk at a time, decoding the next chunk while the last is sent.

// copyEvent is the wire form of an event, flattened for encoding/json: every category's data
// fields in one struct.
type copyEvent struct {
	EventID    string    `json:"event_id"`
	TenantID   string    `json:"tenant_id"`
	OccurredAt time.Time `json:"occurred_at"`
	Schema     string    `json:"schema"`
	Source     string    `json:"source"`
	User       string    `json:"user"`
	Client     struct {
		OS         string `json:"os"`
		OSVersion  string `json:"os_version"`
		DeviceKind string `json:"device_kind"`
	} `json:"client"`
	Data struct {
		UserCount            uint32          `json:"user_count"`
		OrganizationCount    uint32          `json:"organization_count"`
		ClientKind           string          `json:"client_kind"`
		Browser              string          `json:"browser"`
		AppID                string          `json:"app_id"`
		Action               string          `json:"action"`
		FeatureID            string          `json:"feature_id"`
		Count                uint32          `json:"count"`
		RecordsRegistered    uint32          `json:"records_registered"`
		SettingKey           string          `json:"setting_key"`
		Value                json.RawMessage `json:"value"`
		CustomizationPresent bool            `json:"customization_present"`
		CustomizationCount   uint32          `json:"customization_count"`
		OperationID          string          `json:"operation_id"`
		ResultCode           string          `json:"result_code"`
		RequestID            string          `json:"request_id"`
	} `json:"data"`
}

// decodedColumns are a batch in the event store's column order (eventsColumns).
type decodedColumns struct {
	eventID, tenant, category, source, pseudo, osName, device, status, edition, sizeBand   []string
	appID, action, featureID, settingKey, settingValue, operationID, resultCode, requestID []string
	clientKind, browser                                                                    []string
	occurred, ingested                                                                     []time.Time
	schemaVersion, custPresent                                                             []uint8
	osMajor, purposes, policyVersion, partition                                            []uint16
	useCount, records, custCount, users, orgs                                              []uint32
	offset                                                                                 []uint64
	n, bad                                                                                 int  // decoded, not decoded
	last                                                                                   bool // the batch's last chunk
}

// eventsColumns is the event store's column list, in the order decodedColumns.cols gives.
const eventsColumns = `event_id, tenant_id, occurred_at, ingested_at, category, schema_version, source,
 user_pseudonym, os, os_major, device_kind, contract_status, edition, size_band, purposes, policy_version,
 app_id, action, feature_id, use_count, records_registered, setting_key, setting_value, customization_present,
 customization_count, operation_id, result_code, request_id, user_count, organization_count, client_kind, browser,
 kafka_partition, kafka_offset`

func (c *decodedColumns) cols() []any {
	return []any{c.eventID, c.tenant, c.occurred, c.ingested, c.category, c.schemaVersion, c.source,
		c.pseudo, c.osName, c.osMajor, c.device, c.status, c.edition, c.sizeBand, c.purposes, c.policyVersion,
		c.appID, c.action, c.featureID, c.useCount, c.records, c.settingKey, c.settingValue, c.custPresent,
		c.custCount, c.operationID, c.resultCode, c.requestID, c.users, c.orgs, c.clientKind, c.browser,
		c.partition, c.offset}
}

// decodeInto appends one message to the batch's columns; a message that does not decode is
// counted and left out.
func (c *decodedColumns) decodeInto(m kafka.Message, now time.Time) {
	var e copyEvent
	if err := json.Unmarshal(m.Value, &e); err != nil {
		c.bad++
		return
	}
	schema := event.Schema(e.Schema)
	if !schema.Known() { // the store's category is an enum: an insert with another fails whole
		c.bad++
		return
	}
	pseudo := e.User
	if len(pseudo) > 16 {
		pseudo = pseudo[:16]
	}
	d := &e.Data
	c.eventID = append(c.eventID, e.EventID)
	c.tenant = append(c.tenant, e.TenantID)
	c.occurred = append(c.occurred, e.OccurredAt.UTC())
	c.ingested = append(c.ingested, now)
	c.category = append(c.category, decision.Category(schema))
	c.schemaVersion = append(c.schemaVersion, decision.SchemaVersion(schema))
	c.source = append(c.source, e.Source)
	c.pseudo = append(c.pseudo, pseudo)
	c.osName = append(c.osName, e.Client.OS)
	c.osMajor = append(c.osMajor, decision.OSMajor(e.Client.OSVersion))
	c.device = append(c.device, e.Client.DeviceKind)
	c.status = append(c.status, "contracted")
	c.edition = append(c.edition, "")
	c.sizeBand = append(c.sizeBand, "")
	c.purposes = append(c.purposes, 0)
	c.policyVersion = append(c.policyVersion, 0)
	c.appID = append(c.appID, d.AppID)
	c.action = append(c.action, d.Action)
	c.featureID = append(c.featureID, d.FeatureID)
	c.useCount = append(c.useCount, d.Count)
	c.records = append(c.records, d.RecordsRegistered)
	c.settingKey = append(c.settingKey, d.SettingKey)
	c.settingValue = append(c.settingValue, string(bytes.Trim(d.Value, `"`)))
	var present uint8
	if d.CustomizationPresent {
		present = 1
	}
	c.custPresent = append(c.custPresent, present)
	c.custCount = append(c.custCount, d.CustomizationCount)
	c.operationID = append(c.operationID, d.OperationID)
	c.resultCode = append(c.resultCode, d.ResultCode)
	c.requestID = append(c.requestID, d.RequestID)
	c.users = append(c.users, d.UserCount)
	c.orgs = append(c.orgs, d.OrganizationCount)
	c.clientKind = append(c.clientKind, d.ClientKind)
	c.browser = append(c.browser, d.Browser)
	c.partition = append(c.partition, uint16(m.Partition))
	c.offset = append(c.offset, uint64(m.Offset))
	c.n++
}

// DecodingCopy reads every partition of cfg.Kafka.RawTopic from its first offset and copies
// each message, decoded, into copyDB.events until ctx ends or a read or an insert fails. It
// makes batches of cfg.Processor.BatchSize messages (or what arrived within BatchTimeout), as
// the processor does. The messages that did not decode are counted in bad as they are read.
func DecodingCopy(ctx context.Context, conn driver.Conn, cfg config.Config, copyDB string, bad *atomic.Int64) error {
	parts, err := topic.Partitions(ctx, cfg.Kafka.Brokers, cfg.Kafka.RawTopic)
	if err != nil {
		return err
	}
	msgs := make(chan kafka.Message, copyChunkRows)
	readCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	readErr := make(chan error, parts[cfg.Kafka.RawTopic])
	for part := range parts[cfg.Kafka.RawTopic] {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.Kafka.Brokers, Topic: cfg.Kafka.RawTopic, Partition: part,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 250 * time.Millisecond})
		if err := r.SetOffset(kafka.FirstOffset); err != nil {
			_ = r.Close()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			for {
				m, err := r.ReadMessage(readCtx)
				if err != nil {
					if readCtx.Err() == nil {
						readErr <- fmt.Errorf("read partition %d: %w", part, err)
					}
					return
				}
				select {
				case msgs <- m:
				case <-readCtx.Done():
					return
				}
			}
		}()
	}
	// Two stages, as the processor's: batches of up to processor.batch_size events, each one
	// insert sent a chunk at a time as it is decoded, and joined by ClickHouse into one block
	// (the processor's settings, so the table gets the same blocks); the hand-off holds a chunk.
	insert := "INSERT INTO " + copyDB + ".events (" + eventsColumns + ")"
	ictx := clickhouse.Context(ctx, clickhouse.WithSettings(processor.OneBlockSettings(cfg.Processor.BatchSize)))
	chunks := make(chan *decodedColumns, 1)
	inserted := make(chan error, 1)
	insCtx, insFailed := context.WithCancel(ctx) // ends the decoding when an insert fails
	defer insFailed()
	go func() {
		var b driver.Batch
		fail := func(err error) {
			if b != nil {
				_ = b.Abort()
			}
			inserted <- err
			insFailed()
			for range chunks { // drain until the decoder closes it
			}
		}
		for c := range chunks {
			if c.n > 0 {
				if b == nil {
					var err error
					if b, err = conn.PrepareBatch(ictx, insert); err != nil {
						fail(err)
						return
					}
				}
				if err := appendDecoded(b, c); err != nil {
					fail(err)
					return
				}
			}
			if c.last && b != nil {
				err := b.Send()
				b = nil
				if err != nil {
					fail(err)
					return
				}
			}
		}
		if b != nil {
			_ = b.Abort()
		}
		inserted <- nil
	}()
	finish := func(err error) error {
		close(chunks)
		if ierr := <-inserted; err == nil {
			err = ierr
		}
		return err
	}
	for {
		now := time.Now().UTC().Truncate(time.Second)
		var full <-chan time.Time // the batch timeout, from its first message on
		n := 0
		for last := false; !last; {
			c := &decodedColumns{}
		gather:
			for c.n+c.bad < min(copyChunkRows, cfg.Processor.BatchSize-n) {
				select {
				case m := <-msgs:
					if full == nil {
						full = time.After(cfg.Processor.BatchTimeout)
					}
					c.decodeInto(m, now)
				case <-full:
					last = true
					break gather
				case err := <-readErr:
					return finish(err)
				case <-insCtx.Done():
					return finish(nil)
				}
			}
			n += c.n + c.bad
			bad.Add(int64(c.bad))
			c.last = last || n >= cfg.Processor.BatchSize
			last = c.last
			select {
			case chunks <- c:
			case <-insCtx.Done():
				return finish(nil)
			}
		}
	}
}

// copyChunkRows is the processor's chunk: events decoded, then sent as one block of the insert.
const copyChunkRows = 8192

// appendDecoded sends a chunk as one block of the open insert.
func appendDecoded(b driver.Batch, c *decodedColumns) error {
	for i, col := range c.cols() {
		if err := b.Column(i).Append(col); err != nil {
			return fmt.Errorf("append column %d: %w", i, err)
		}
	}
	return b.Flush()
}
