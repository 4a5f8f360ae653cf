package topic_test

// Proves that kafka-go's consumer groups work against the Apache Kafka 4.x broker Shukei runs
// (JoinGroup, SyncGroup, Heartbeat, OffsetCommit and OffsetFetch at the versions kafka-go
// speaks), and that committing after processing gives the guarantee the pipeline relies on:
// when a member dies, nothing it committed is delivered again and nothing it had not committed
// is lost.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/servicetest"
)

const (
	groupMessages   = 10000
	groupPartitions = 6
	commitEvery     = 100
	memberEnv       = "SHUKEI_TEST_GROUP_MEMBER" // brokers|topic|group|logfile for the child
)

func groupReader(brokers []string, topicName, group string) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:           brokers,
		Topic:             topicName,
		GroupID:           group,
		MinBytes:          1,
		MaxBytes:          1 << 20,
		MaxWait:           200 * time.Millisecond,
		CommitInterval:    0, // synchronous: CommitMessages returns when the broker has the offsets
		StartOffset:       kafka.FirstOffset,
		SessionTimeout:    6 * time.Second,
		HeartbeatInterval: 500 * time.Millisecond,
		RebalanceTimeout:  10 * time.Second,
		JoinGroupBackoff:  300 * time.Millisecond,
		MaxAttempts:       10,
	})
}

// record is one line of a member's log: it processed (P) or committed (C) one message.
type record struct {
	kind      byte
	partition int
	offset    int64
	value     int
}

func (r record) String() string {
	return fmt.Sprintf("%c %d %d %d", r.kind, r.partition, r.offset, r.value)
}

func parseRecord(s string) (record, error) {
	f := strings.Fields(s)
	if len(f) != 4 || len(f[0]) != 1 {
		return record{}, fmt.Errorf("bad line %q", s)
	}
	p, err1 := strconv.Atoi(f[1])
	o, err2 := strconv.ParseInt(f[2], 10, 64)
	v, err3 := strconv.Atoi(f[3])
	if err := errors.Join(err1, err2, err3); err != nil {
		return record{}, err
	}
	return record{kind: f[0][0], partition: p, offset: o, value: v}, nil
}

// consume is a group member's loop: fetch, process (log P), and every commitEvery messages
// commit and log C for each committed message. Only what CommitMessages confirmed is logged
// as committed.
func consume(ctx context.Context, r *kafka.Reader, emit func(record), pause time.Duration) error {
	var pending []kafka.Message
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return err
		}
		v, err := strconv.Atoi(strings.TrimPrefix(string(m.Value), "msg-"))
		if err != nil {
			return fmt.Errorf("bad value %q", m.Value)
		}
		emit(record{'P', m.Partition, m.Offset, v})
		pending = append(pending, m)
		if pause > 0 {
			time.Sleep(pause)
		}
		if len(pending) >= commitEvery {
			if err := r.CommitMessages(ctx, pending...); err == nil {
				for _, c := range pending {
					cv, _ := strconv.Atoi(strings.TrimPrefix(string(c.Value), "msg-"))
					emit(record{'C', c.Partition, c.Offset, cv})
				}
			} else if ctx.Err() != nil {
				return ctx.Err()
			}
			// A failed commit (rebalance in progress) leaves the messages uncommitted: they
			// will be delivered again, which is the at-least-once half of the contract.
			pending = pending[:0]
		}
	}
}

// TestGroupMemberProcess is the body of the member that the parent test kills; it runs only
// when the parent re-executes the test binary with memberEnv set.
func TestGroupMemberProcess(t *testing.T) {
	spec := os.Getenv(memberEnv)
	if spec == "" {
		return
	}
	parts := strings.Split(spec, "|")
	f, err := os.OpenFile(parts[3], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	r := groupReader(strings.Split(parts[0], ","), parts[1], parts[2])
	// Each line is one write(2): it survives SIGKILL of this process.
	_ = consume(context.Background(), r, func(rec record) { fmt.Fprintln(f, rec) }, 2*time.Millisecond)
}

func TestConsumerGroupSurvivesKilledMember(t *testing.T) {
	cfg := servicetest.Kafka(t)
	brokers := cfg.Kafka.Brokers
	topicName := servicetest.Topic(t, brokers, groupPartitions)
	group := servicetest.Name(t, "group.")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Produce with acks from all in-sync replicas, synchronously, keyed like tenant ids.
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topicName,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    500,
		BatchTimeout: 5 * time.Millisecond,
	}
	msgs := make([]kafka.Message, groupMessages)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(fmt.Sprintf("tenant-%03d", i%97)), Value: []byte(fmt.Sprintf("msg-%d", i))}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// Member B, in this process, joins first; member A, a child process, joins second and so
	// forces the first rebalance.
	var mu sync.Mutex
	var bLog []record
	bCtx, bCancel := context.WithCancel(ctx)
	defer bCancel()
	rb := groupReader(brokers, topicName, group)
	bDone := make(chan error, 1)
	go func() {
		bDone <- consume(bCtx, rb, func(r record) { mu.Lock(); bLog = append(bLog, r); mu.Unlock() }, 2*time.Millisecond)
	}()

	aFile := t.TempDir() + "/member-a.log"
	child := exec.Command(os.Args[0], "-test.run=^TestGroupMemberProcess$", "-test.v=false")
	child.Env = append(os.Environ(), memberEnv+"="+strings.Join([]string{strings.Join(brokers, ","), topicName, group, aFile}, "|"))
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	childDone := make(chan struct{})
	go func() { _ = child.Wait(); close(childDone) }()
	t.Cleanup(func() { _ = child.Process.Kill(); <-childDone })

	// Wait until A has committed a few batches and both members own partitions, then kill A.
	var aLog []record
	for {
		aLog = readLog(t, aFile)
		committed := 0
		for _, r := range aLog {
			if r.kind == 'C' {
				committed++
			}
		}
		mu.Lock()
		bParts := partitionsOf(bLog[len(bLog)/2:])
		mu.Unlock()
		if committed >= 3*commitEvery && len(partitionsOf(aLog)) > 0 && len(bParts) > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("member A never got going: %d records", len(aLog))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-childDone
	// Deliveries to B before this point may precede A's commits (B owned every partition
	// until A joined); only what B receives after A died can be a redelivery of a commit.
	mu.Lock()
	killedAt := len(bLog)
	mu.Unlock()
	aLog = readLog(t, aFile)

	// B must take over A's partitions after the session timeout and read everything.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		seen := map[int]bool{}
		for _, r := range bLog {
			seen[r.value] = true
		}
		for _, r := range aLog {
			seen[r.value] = true
		}
		mu.Unlock()
		if len(seen) == groupMessages {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the kill only %d of %d messages were processed", len(seen), groupMessages)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Let B commit its tail: stop fetching only after a final idle period.
	time.Sleep(time.Second)
	bCancel()
	<-bDone
	mu.Lock()
	defer mu.Unlock()

	aProcessed, aCommitted := map[int]bool{}, map[int]bool{}
	aParts := map[int]bool{}
	for _, r := range aLog {
		if r.kind == 'P' {
			aProcessed[r.value] = true
			aParts[r.partition] = true
		} else {
			aCommitted[r.value] = true
		}
	}
	bParts := map[int]bool{}
	bTimes := map[int]int{}      // deliveries to B, all of them
	bAfterKill := map[int]bool{} // deliveries to B after A died
	bProcessed := 0
	for i, r := range bLog {
		if r.kind == 'P' {
			bTimes[r.value]++
			bParts[r.partition] = true
			bProcessed++
			if i >= killedAt {
				bAfterKill[r.value] = true
			}
		}
	}

	// Two members shared the group: A held partitions B took over.
	if len(aParts) == 0 || len(aParts) == groupPartitions {
		t.Errorf("member A processed partitions %v; want a share of the %d", keys(aParts), groupPartitions)
	}
	for p := range aParts {
		if !bParts[p] {
			t.Errorf("partition %d of the killed member was never taken over", p)
		}
	}
	// Nothing lost.
	lost := 0
	for v := range groupMessages {
		if !aProcessed[v] && bTimes[v] == 0 {
			lost++
		}
	}
	// Nothing committed redelivered; what was redelivered was processed but uncommitted by A.
	committedAgain, redelivered := 0, 0
	for v := range aProcessed {
		if bAfterKill[v] {
			redelivered++
			if aCommitted[v] {
				committedAgain++
			}
		}
	}
	t.Logf("A processed %d (committed %d) on partitions %v, then was killed; B processed %d, of which %d were A's uncommitted messages redelivered",
		len(aProcessed), len(aCommitted), keys(aParts), bProcessed, redelivered)
	if lost != 0 {
		t.Errorf("lost=%d: messages no member processed", lost)
	}
	if committedAgain != 0 {
		t.Errorf("%d messages committed by the killed member were delivered again", committedAgain)
	}
	if len(aCommitted) == 0 {
		t.Error("member A committed nothing; the test proved nothing about commits")
	}

	// The broker's committed offsets, read back through OffsetFetch, reach the end of every
	// partition once B has committed its tail (B commits every full batch; the last partial
	// batch of each partition may stay uncommitted, so allow less than one batch).
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	off, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topicName: {0, 1, 2, 3, 4, 5}}})
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	var committedTotal int64
	for _, p := range off.Topics[topicName] {
		if p.Error != nil {
			t.Errorf("partition %d: %v", p.Partition, p.Error)
		}
		if p.CommittedOffset > 0 {
			committedTotal += p.CommittedOffset
		}
	}
	if committedTotal < groupMessages-commitEvery || committedTotal > groupMessages {
		t.Errorf("broker holds %d committed offsets in all, want within one batch of %d", committedTotal, groupMessages)
	}
	if err := rb.Close(); err != nil {
		t.Errorf("close reader: %v", err)
	}
}

func readLog(t *testing.T, path string) []record {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		r, err := parseRecord(sc.Text())
		if err != nil {
			continue // the last line may be cut by the kill
		}
		out = append(out, r)
	}
	return out
}

func partitionsOf(rs []record) map[int]bool {
	out := map[int]bool{}
	for _, r := range rs {
		out[r.partition] = true
	}
	return out
}

func keys(m map[int]bool) []int {
	var out []int
	for k := range groupPartitions {
		if m[k] {
			out = append(out, k)
		}
	}
	return out
}
