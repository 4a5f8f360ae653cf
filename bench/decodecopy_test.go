package bench

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/vectors"
	"github.com/shukei/shukei/pipeline/decision"
)

// The decoding copy fills the event store's columns as the processor would from the same
// valid event (where no registry, guard or pseudonym is involved), one row a message.
func TestDecodingCopyFillsTheStoreColumns(t *testing.T) {
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	for name, b := range vectors.Read(t, "../schemas/testdata", "valid") {
		ev, err := event.Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var c decodedColumns
		c.decodeInto(kafka.Message{Partition: 3, Offset: 77, Value: b}, now)
		if c.n != 1 || c.bad != 0 {
			t.Fatalf("%s: decoded %d, bad %d", name, c.n, c.bad)
		}
		if len(c.cols()) != 34 {
			t.Fatalf("%d columns, the event store has 34", len(c.cols()))
		}
		for i, col := range c.cols() {
			if n := lenOf(col); n != 1 {
				t.Fatalf("%s: column %d has %d values", name, i, n)
			}
		}
		check := func(what string, got, want any) {
			t.Helper()
			if got != want {
				t.Errorf("%s: %s = %v, want %v", name, what, got, want)
			}
		}
		check("event_id", c.eventID[0], ev.EventID)
		check("tenant_id", c.tenant[0], ev.TenantID)
		check("occurred_at", c.occurred[0], ev.OccurredAt.UTC())
		check("category", c.category[0], decision.Category(ev.Schema))
		check("schema_version", c.schemaVersion[0], decision.SchemaVersion(ev.Schema))
		check("os", c.osName[0], string(ev.Client.OS))
		check("os_major", c.osMajor[0], decision.OSMajor(ev.Client.OSVersion))
		check("kafka", [2]uint64{uint64(c.partition[0]), c.offset[0]}, [2]uint64{3, 77})
		switch d := ev.Data.(type) {
		case *event.FeatureUse:
			check("feature_id", c.featureID[0], d.FeatureID)
			check("use_count", c.useCount[0], uint32(d.Count))
		case *event.Settings:
			check("setting_key", c.settingKey[0], d.SettingKey)
		case *event.AppAccess:
			check("action", c.action[0], string(d.Action))
		}
	}
}

func TestDecodingCopyCountsWhatDoesNotDecode(t *testing.T) {
	var c decodedColumns
	for _, b := range []string{`{`, `[]`, `{"schema":"feature_use"}`, `{"schema":"feature_use/v1","occurred_at":"yesterday"}`, `{"schema":"page_view/v1"}`} {
		c.decodeInto(kafka.Message{Value: []byte(b)}, time.Now())
	}
	if c.n != 0 || c.bad != 5 || len(c.eventID) != 0 {
		t.Fatalf("decoded %d, bad %d, %d rows", c.n, c.bad, len(c.eventID))
	}
}

func lenOf(col any) int {
	switch c := col.(type) {
	case []string:
		return len(c)
	case []time.Time:
		return len(c)
	case []uint8:
		return len(c)
	case []uint16:
		return len(c)
	case []uint32:
		return len(c)
	case []uint64:
		return len(c)
	}
	return -1
}
