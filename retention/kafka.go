package retention

import (
	"context"
	"fmt"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/pipeline/topic"
)

// TopicHorizon is until when a Kafka topic still holds what was written for a tenant.
type TopicHorizon struct {
	topic.Horizon
	// Role is "raw" or "dlq".
	Role string
	// Keyed: the topic is keyed by tenant id, so Partition holds every record of the tenant.
	// The DLQ is keyed by the source record's position: any partition may hold the tenant's.
	Keyed bool
	// Configured is the retention the configuration asks for ('shukei topics' enforces it).
	Configured string
}

// TopicHorizons reads the horizon of the raw and the DLQ topic for tenant. Kafka cannot
// delete one tenant's records, only age them out: a deleted tenant's raw events (with their
// raw user ids) stay in the raw topic's partition until its GoneBy.
func TopicHorizons(ctx context.Context, k config.Kafka, tenant string) ([]TopicHorizon, error) {
	specs := topic.Specs(k)
	var out []TopicHorizon
	for i, t := range []struct {
		role  string
		name  string
		keyed bool
	}{
		// The collector (and every producer of the raw topic) keys by tenant id.
		{"raw", k.RawTopic, true},
		// The processor keys DLQ records by the source position; the tenant is a header.
		{"dlq", k.DLQTopic, false},
	} {
		var key []byte
		if t.keyed {
			key = []byte(tenant)
		}
		h, err := topic.HorizonOf(ctx, k.Brokers, t.name, key)
		if err != nil {
			return out, fmt.Errorf("the horizon of topic %s: %w", t.name, err)
		}
		out = append(out, TopicHorizon{Horizon: h, Role: t.role, Keyed: t.keyed, Configured: specs[i].Config[topic.RetentionMs]})
	}
	return out, nil
}
