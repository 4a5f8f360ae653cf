package retention

import (
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/pipeline/topic"
)

func TestAsOf(t *testing.T) {
	if AsOf("") != nil {
		t.Error(`AsOf("") is not nil (now)`)
	}
	if at, err := AsOf("2026-03-04T05:06:07Z")(); err != nil || !at.Equal(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)) {
		t.Errorf("%v %v", at, err)
	}
	if _, err := AsOf("tomorrow")(); err == nil || err.Error() != `--now "tomorrow": want RFC 3339` {
		t.Errorf("bad time: %v", err)
	}
}

func TestWriteReport(t *testing.T) {
	var b strings.Builder
	WriteReport(&b, Report{})
	if b.String() != "nothing due\n" {
		t.Errorf("empty run: %q", b.String())
	}
	b.Reset()
	at := time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)
	WriteReport(&b, Report{
		Deleted: []Receipt{{Tenant: "acme", Rows: 12, Tables: 3, AuditSeq: 7}},
		Dropped: []Dropped{{Table: "shukei.events", Partition: "202501"}},
		State: aggregator.StateExpiry{Cutoff: at, Partials: 5, Progress: 2,
			Windows: []aggregator.ExpiredWindow{{Plan: "p1", Start: at.Add(-48 * time.Hour), End: at.Add(-24 * time.Hour), ReleasedAt: at.Add(-time.Hour), Partials: 5}}},
	})
	want := `deleted tenant acme: 12 rows in 3 tables, pseudonymisation root destroyed (audit record #7)
dropped partition 202501 of shukei.events
deleted 5 partial aggregates of window 2026-03-02T00:00:00Z/2026-03-03T00:00:00Z (plan p1, released 2026-03-03T23:00:00Z)
deleted 2 superseded aggregator progress rows (the latest of each partition is kept)
aggregate_state: 7 rows deleted, of windows released at or before 2026-03-04T00:00:00Z
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// WriteHorizons: a missing topic, a keyed topic holding records under a bounded retention, an
// unkeyed one keeping them forever, and one holding nothing.
func TestWriteHorizons(t *testing.T) {
	at := time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)
	h := topic.Horizon{Topic: "usage.raw", Exists: true, Partitions: 6, Partition: 2, Retention: 7 * 24 * time.Hour, Segment: time.Hour,
		DeleteDelay: time.Minute, CheckInterval: 5 * time.Minute, TopicLevel: true, GoneBy: at.Add(8 * 24 * time.Hour),
		Retained: []topic.Retained{{Partition: 2, First: 10, Next: 20, Oldest: at.Add(-time.Hour), Newest: at}}}
	unbounded := h
	unbounded.Topic, unbounded.Partition, unbounded.Retention, unbounded.TopicLevel = "usage.dlq", -1, -1, false
	empty := h
	empty.Topic, empty.Retained = "usage.dlq", nil
	var b strings.Builder
	WriteHorizons(&b, "acme", []TopicHorizon{
		{Role: "raw", Horizon: topic.Horizon{Topic: "gone"}},
		{Role: "raw", Keyed: true, Configured: "604800000", Horizon: h},
		{Role: "dlq", Configured: "-1", Horizon: unbounded},
		{Role: "dlq", Configured: "1000", Horizon: empty},
	}, at)
	out := b.String()
	for _, want := range []string{
		"kafka raw topic gone: does not exist, holds nothing of acme\n",
		"kafka raw topic usage.raw: records of acme are in partition 2 of 6 (keyed by tenant id, murmur2 as the collector writes)\n",
		"  retention.ms   604800000 (168h0m0s); segment.ms 3600000 (1h0m0s); retention checked every 5m0s; files deleted 1m0s later\n",
		"  oldest record  partition 2 offset 10 at 2026-03-03T23:00:00Z\n",
		"  newest record  partition 2 offset 19 at 2026-03-04T00:00:00Z\n",
		"  gone by        2026-03-12T00:00:00Z: every record written for acme up to now",
		"  at the latest  2026-03-11T01:06:00Z: anything written up to now",
		"kafka dlq topic usage.dlq: records of acme may be in any of its 6 partitions (keyed by the source record's position)\n",
		"  retention.ms   unbounded (-1), the broker's default;",
		"  gone by        never: the topic keeps records forever",
		"; configured 1s: run 'shukei topics'",
		"  retained       nothing: every record written so far is gone\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(out, "by the times above.\n") {
		t.Errorf("no closing line:\n%s", out)
	}
}
