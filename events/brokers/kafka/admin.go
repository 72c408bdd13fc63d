package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TopicSpec describes a topic for [EnsureTopics].
type TopicSpec struct {
	// Name is the topic's name. Required.
	Name string
	// Partitions is its partition count; 0 or -1 take the broker's
	// num.partitions.
	Partitions int32
	// ReplicationFactor is its replication factor; 0 or -1 take the
	// broker's default.replication.factor.
	ReplicationFactor int16
	// Configs are topic configurations (retention.ms, min.insync.replicas,
	// ...); nil values take the broker's defaults.
	Configs map[string]*string
}

// EnsureTopics creates, with the admin API, each topic of topics that does
// not exist yet; an existing topic is left as it is, whatever its
// partitions and configuration. It is meant for development and tests:
// production topics are usually created deliberately, with the partition
// count, replication and retention they need. cl is any client of the
// cluster (a Sender's [Sender.Client], say); it is not closed. Every
// failure is reported, joined.
func EnsureTopics(ctx context.Context, cl *kgo.Client, topics ...TopicSpec) error {
	if cl == nil {
		return invalid("EnsureTopics: nil client")
	}
	adm := kadm.NewClient(cl)
	var errs []error
	for _, t := range topics {
		if t.Name == "" {
			errs = append(errs, invalid("EnsureTopics: a topic has no name"))
			continue
		}
		parts, repl := t.Partitions, t.ReplicationFactor
		if parts == 0 {
			parts = -1
		}
		if repl == 0 {
			repl = -1
		}
		resp, err := adm.CreateTopic(ctx, parts, repl, t.Configs, t.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			if resp.ErrMessage != "" {
				err = fmt.Errorf("%w (%s)", err, resp.ErrMessage)
			}
			errs = append(errs, fmt.Errorf("kafka: creating topic %q: %w", t.Name, err))
		}
	}
	return errors.Join(errs...)
}

// topicExists reports whether topic exists, through a metadata request.
func topicExists(ctx context.Context, cl *kgo.Client, topic string) (bool, error) {
	details, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return false, err
	}
	d, ok := details[topic]
	if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return false, nil
	}
	if d.Err != nil {
		return false, d.Err
	}
	return true, nil
}
