package loadgen

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/pipeline/collector"
)

// topicSize is the number of messages in a topic (the sum of its partitions' end offsets).
func topicSize(t *testing.T, brokers []string, topic string, partitions int) int64 {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range partitions {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
	}
	resp, err := c.ListOffsets(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			t.Fatal(po.Error)
		}
		n += po.LastOffset
	}
	return n
}

// Through a real collector into real Kafka: every message is accepted or refused at the door
// with its reason, and the topic holds exactly the accepted ones; straight to Kafka, it holds
// all of them.
func TestSendThroughCollectorAndDirect(t *testing.T) {
	cfg := servicetest.Kafka(t)
	cfg.Kafka.RawTopic = servicetest.Topic(t, cfg.Kafka.Brokers, 3)
	cfg.Events.MaxAge = 15 * 24 * time.Hour
	gcfg := Config{Tenants: 40, Seed: 11, Events: 6000, BadShare: 0.05}
	g, err := New(gcfg)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, tn := range g.Tenants() {
		tok := "shk_test_" + tn.ID
		tokens[tn.ID] = tok
		cfg.Collector.IngestTokens = append(cfg.Collector.IngestTokens, collector.TokenHash(tn.ID, tok))
	}
	w := collector.NewKafkaWriter(cfg.Kafka, cfg.Collector)
	defer w.Close()
	c, err := collector.New(cfg, collector.Deps{Writer: w, Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	st, err := SendHTTP(context.Background(), "http://"+ln.Addr().String(), tokens, g, Options{Batch: 200})
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, n := range st.Rejected {
		refused += n
	}
	if st.Sent != 6000 || st.Accepted+refused != st.Sent {
		t.Fatalf("sent %d, accepted %d, refused %d %v", st.Sent, st.Accepted, refused, st.Rejected)
	}
	for _, reason := range []string{BadEmail, BadPersonalName, BadFileName} {
		if st.Rejected[reason] == 0 {
			t.Errorf("no %s refused at the door: %v", reason, st.Rejected)
		}
	}
	if refused < 200 || refused > 400 {
		t.Errorf("refused %d of 6000 with 5%% bad: %v", refused, st.Rejected)
	}
	if n := topicSize(t, cfg.Kafka.Brokers, cfg.Kafka.RawTopic, 3); n != int64(st.Accepted) {
		t.Errorf("topic holds %d messages, the collector accepted %d", n, st.Accepted)
	}

	// Straight to Kafka, at a target rate: everything lands, and the rate holds.
	direct := servicetest.Topic(t, cfg.Kafka.Brokers, 3)
	g2, _ := New(Config{Tenants: 40, Seed: 12, Events: 4000, BadShare: 0.05})
	st2, err := SendKafka(context.Background(), cfg.Kafka.Brokers, direct, g2, Options{Rate: 4000, Batch: 200})
	if err != nil {
		t.Fatal(err)
	}
	if st2.Sent != 4000 || topicSize(t, cfg.Kafka.Brokers, direct, 3) != 4000 {
		t.Errorf("direct: sent %d", st2.Sent)
	}
	if st2.Elapsed < 800*time.Millisecond {
		t.Errorf("4000 events at 4000/s took %s: the rate was not held", st2.Elapsed)
	}
}
