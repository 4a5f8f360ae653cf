package group

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Lease says whether a member may still act for its generation: whether the group
// coordinator accepted one of its heartbeats recently enough that no other member can have
// been given its partitions yet.
//
// The coordinator hands a member's partitions on only once the member rejoined (its run
// returned) or its session expired: SessionTimeout after the last heartbeat it accepted. A
// process paused (SIGSTOP, a stalled VM) past that learns it only when its next heartbeat
// fails, and meanwhile its other goroutines go on writing — storing what the partitions' new
// owner stores too. A Lease heartbeats on its own (every LeaseEvery) and Valid reports whether
// the last heartbeat the coordinator accepted was *sent* less than validFor ago: whatever a
// member does only while its lease is valid happens before sent+validFor, while the
// coordinator keeps the member's partitions until at least sent+SessionTimeout.
type Lease struct {
	validFor time.Duration
	mu       sync.Mutex
	accepted time.Time // when the last heartbeat the coordinator accepted was sent (monotonic)
	lost     error     // the generation is over (the coordinator said so)
}

// LeaseEvery is how often a lease heartbeats.
const LeaseEvery = 500 * time.Millisecond

// ErrLeaseExpired is a lease whose last accepted heartbeat is too old: the member may have
// lost its partitions without knowing it yet.
var ErrLeaseExpired = errors.New("no heartbeat accepted by the group coordinator recently enough: the partitions may be another member's by now")

// StartLease heartbeats for gen until ctx ends and returns once the coordinator accepted the
// first heartbeat (or ctx ended, or the coordinator said the generation is over).
func StartLease(ctx context.Context, brokers []string, gen *kafka.Generation, validFor time.Duration) *Lease {
	l := &Lease{validFor: validFor}
	// Each round trip is cut short well within validFor: one slow answer must not outlive the
	// lease of a healthy member.
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: time.Second}
	var coordinator net.Addr
	beat := func() {
		sent := time.Now()
		if coordinator == nil {
			res, err := client.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: gen.GroupID, KeyType: kafka.CoordinatorKeyTypeConsumer})
			if err != nil || res.Error != nil {
				return
			}
			coordinator = kafka.TCP(net.JoinHostPort(res.Coordinator.Host, strconv.Itoa(res.Coordinator.Port)))
		}
		res, err := client.Heartbeat(ctx, &kafka.HeartbeatRequest{Addr: coordinator, GroupID: gen.GroupID, GenerationID: gen.ID, MemberID: gen.MemberID})
		if err != nil {
			coordinator = nil
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		code := heartbeatError(res)
		switch {
		case code == nil:
			if sent.After(l.accepted) {
				l.accepted = sent
			}
		case errors.Is(code, kafka.RebalanceInProgress), errors.Is(code, kafka.UnknownMemberId),
			errors.Is(code, kafka.IllegalGeneration), errors.Is(code, kafka.FencedInstanceID):
			if l.lost == nil {
				l.lost = fmt.Errorf("generation %d is over: %w", gen.ID, code)
			}
		default: // another coordinator, or none available: find it again
			coordinator = nil
		}
	}
	for ctx.Err() == nil {
		beat()
		if l.Check() == nil || l.ended() {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	go func() {
		t := time.NewTicker(LeaseEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				beat()
				if l.ended() {
					return
				}
			}
		}
	}()
	return l
}

// heartbeatError is the coordinator's answer to a heartbeat. kafka-go v0.4.51 reads Heartbeat
// responses of version 1 and later with their two fields swapped (protocol/heartbeat declares
// ErrorCode before ThrottleTimeMs; the Kafka protocol has the throttle time first), so
// res.Error is always nil and the error code arrives as the low 16 bits of the throttle time,
// in milliseconds. Both are read: should kafka-go fix the order, res.Error carries it and the
// throttle (0 but under quotas) reads as no error. TestHeartbeatErrorsAreRead pins it.
func heartbeatError(res *kafka.HeartbeatResponse) error {
	if res.Error != nil {
		return res.Error
	}
	if code := int16(uint32(res.Throttle/time.Millisecond) & 0xffff); code != 0 {
		return kafka.Error(code)
	}
	return nil
}

func (l *Lease) ended() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost != nil
}

// Check is nil while the member may act for its generation: the coordinator has not said the
// generation is over, and accepted a heartbeat sent less than validFor ago.
func (l *Lease) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return l.lost
	}
	if l.accepted.IsZero() || time.Since(l.accepted) >= l.validFor {
		return ErrLeaseExpired
	}
	return nil
}
