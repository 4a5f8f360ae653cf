package topic

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// ConfigValue is one topic setting as the broker reports it.
type ConfigValue struct {
	Value string
	// TopicLevel: the topic has this value of its own (DYNAMIC_TOPIC_CONFIG); otherwise it
	// follows the broker's setting or Kafka's default.
	TopicLevel bool
}

// configSourceTopic is DescribeConfigs' ConfigSource of a topic's own setting.
const configSourceTopic = 1

// Describe reads the named settings of a topic (all of them if names is empty) with
// DescribeConfigs.
func Describe(ctx context.Context, brokers []string, topic string, names ...string) (map[string]ConfigValue, error) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	return describe(ctx, client, topic, names)
}

func describe(ctx context.Context, client *kafka.Client, topic string, names []string) (map[string]ConfigValue, error) {
	resp, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: names},
	}})
	if err != nil {
		return nil, fmt.Errorf("describe the settings of topic %s: %w", topic, err)
	}
	if len(resp.Resources) != 1 {
		return nil, fmt.Errorf("describe the settings of topic %s: %d resources in the answer", topic, len(resp.Resources))
	}
	r := resp.Resources[0]
	if r.Error != nil {
		return nil, fmt.Errorf("describe the settings of topic %s: %w", topic, r.Error)
	}
	out := map[string]ConfigValue{}
	for _, e := range r.ConfigEntries {
		out[e.ConfigName] = ConfigValue{Value: e.ConfigValue, TopicLevel: e.ConfigSource == configSourceTopic}
	}
	return out, nil
}

// enforce makes the topic's settings those of the spec: a setting that differs, or that the
// topic only inherits from the broker, is set with IncrementalAlterConfigs (which leaves the
// topic's other settings alone; AlterConfigs would reset every setting it is not given), then
// read back until the broker reports it.
func enforce(ctx context.Context, client *kafka.Client, s Spec) (map[string]string, []Change, error) {
	names := slices.Sorted(maps.Keys(s.Config))
	var have map[string]ConfigValue
	// A topic created a moment ago may not be describable on every broker yet.
	err := within(ctx, 15*time.Second, func() error {
		var err error
		have, err = describe(ctx, client, s.Name, names)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	var changes []Change
	var set []kafka.IncrementalAlterConfigsRequestConfig
	for _, n := range names {
		h, want := have[n], s.Config[n]
		if h.Value == want && h.TopicLevel {
			continue
		}
		changes = append(changes, Change{Name: n, From: h.Value, To: want, Inherited: !h.TopicLevel})
		set = append(set, kafka.IncrementalAlterConfigsRequestConfig{Name: n, Value: want, ConfigOperation: kafka.ConfigOperationSet})
	}
	if len(set) > 0 {
		resp, err := client.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{
			{ResourceType: kafka.ResourceTypeTopic, ResourceName: s.Name, Configs: set},
		}})
		if err != nil {
			return nil, nil, fmt.Errorf("set %v of topic %s: %w", changes, s.Name, err)
		}
		for _, r := range resp.Resources {
			if r.Error != nil {
				return nil, nil, fmt.Errorf("set %v of topic %s: %w", changes, s.Name, r.Error)
			}
		}
	}
	// Read back: what the broker reports is what the status says, and a setting the broker
	// did not take is an error, not a silent difference.
	got := map[string]string{}
	err = within(ctx, 15*time.Second, func() error {
		have, err := describe(ctx, client, s.Name, names)
		if err != nil {
			return err
		}
		for _, n := range names {
			got[n] = have[n].Value
			if h := have[n]; h.Value != s.Config[n] || !h.TopicLevel {
				return fmt.Errorf("topic %s: %s is %q (topic-level: %v) after setting it to %q", s.Name, n, h.Value, h.TopicLevel, s.Config[n])
			}
		}
		return nil
	})
	return got, changes, err
}

// within retries fn every 200ms until it succeeds, d passes or ctx ends; the last error wins.
func within(ctx context.Context, d time.Duration, fn func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Millis parses a *.ms setting; a negative value (-1: unbounded) is returned as such.
func Millis(v string) (time.Duration, error) {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number of milliseconds", v)
	}
	if ms < 0 {
		return time.Duration(ms), nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}
