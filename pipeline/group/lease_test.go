package group

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/servicetest"
)

// A lease is valid while the coordinator accepts its heartbeats, ends as soon as the
// coordinator says the generation is over (another member joined), and expires validFor after
// its last accepted heartbeat once it stops heartbeating — what a paused process sees when it
// resumes, before anything else tells it.
func TestLeaseFollowsTheGeneration(t *testing.T) {
	cfg := servicetest.Kafka(t)
	brokers := cfg.Kafka.Brokers
	topic := servicetest.Topic(t, brokers, 2)
	id := servicetest.Name(t, "lease.")
	join := func(ctx context.Context) (*kafka.ConsumerGroup, *kafka.Generation) {
		t.Helper()
		cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{ID: id, Brokers: brokers, Topics: []string{topic},
			SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second, HeartbeatInterval: time.Second, JoinGroupBackoff: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		gen, err := cg.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return cg, gen
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cg, gen := join(ctx)
	defer cg.Close()

	lctx, stop := context.WithCancel(ctx)
	l := StartLease(lctx, brokers, gen, 1500*time.Millisecond)
	if err := l.Check(); err != nil {
		t.Fatalf("a fresh lease: %v", err)
	}
	time.Sleep(3 * time.Second) // longer than validFor: the heartbeats keep it valid
	if err := l.Check(); err != nil {
		t.Fatalf("a lease heartbeating for 3 s: %v", err)
	}
	stop() // a paused process heartbeats no more
	time.Sleep(1600 * time.Millisecond)
	if err := l.Check(); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("1.6 s after the last heartbeat with validFor 1.5 s: %v, want ErrLeaseExpired", err)
	}

	// Another member joins: the coordinator answers the next heartbeat that the generation is over.
	l = StartLease(ctx, brokers, gen, 5*time.Second)
	if err := l.Check(); err != nil {
		t.Fatalf("a second lease on the same generation: %v", err)
	}
	joined := make(chan *kafka.ConsumerGroup, 1)
	go func() {
		cg2, _ := join(ctx)
		joined <- cg2
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := l.Check()
		if errors.Is(err, kafka.RebalanceInProgress) || errors.Is(err, kafka.UnknownMemberId) || errors.Is(err, kafka.IllegalGeneration) {
			t.Logf("after another member joined: %v", err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20 s after another member asked to join the lease still says %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Let the first member rejoin so the second gets its generation, then close both.
	go func() { _, _ = cg.Next(ctx) }()
	select {
	case cg2 := <-joined:
		cg2.Close()
	case <-time.After(30 * time.Second):
	}
}

// The coordinator's error answers are read (heartbeatError works around kafka-go's field order):
// a heartbeat for a member the group does not know is refused.
func TestHeartbeatErrorsAreRead(t *testing.T) {
	cfg := servicetest.Kafka(t)
	client := &kafka.Client{Addr: kafka.TCP(cfg.Kafka.Brokers...), Timeout: 5 * time.Second}
	group := servicetest.Name(t, "nobody.")
	res, err := client.FindCoordinator(context.Background(), &kafka.FindCoordinatorRequest{Key: group, KeyType: kafka.CoordinatorKeyTypeConsumer})
	if err != nil || res.Error != nil {
		t.Fatalf("find coordinator: %v %v", err, res)
	}
	addr := kafka.TCP(net.JoinHostPort(res.Coordinator.Host, strconv.Itoa(res.Coordinator.Port)))
	hb, err := client.Heartbeat(context.Background(), &kafka.HeartbeatRequest{Addr: addr, GroupID: group, GenerationID: 7, MemberID: "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	got := heartbeatError(hb)
	t.Logf("heartbeat of an unknown member: %v (kafka-go read error %v, throttle %v)", got, hb.Error, hb.Throttle)
	if !errors.Is(got, kafka.UnknownMemberId) && !errors.Is(got, kafka.IllegalGeneration) && !errors.Is(got, kafka.GroupIdNotFound) {
		t.Fatalf("a heartbeat of a member no group knows was answered %v, want unknown member", got)
	}
}
