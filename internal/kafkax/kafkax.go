// Package kafkax is the thin shared plumbing over segmentio/kafka-go: broker checks and topic
// administration. Stage packages own their producers and consumers.
package kafkax

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// SplitBrokers turns "a:9092, b:9092" into its addresses.
func SplitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Ping asks the cluster for its metadata through the first broker that answers, proving it
// serves the Kafka protocol (an open port is not enough), with a real round trip each time.
func Ping(ctx context.Context, c Cluster) error {
	if len(c.Brokers) == 0 {
		return errors.New("kafka: no brokers configured")
	}
	var errs []error
	for _, b := range c.Brokers {
		// A transport of its own: kafka-go's shared one answers metadata requests from its cache
		// (transport.go, connPool.roundTrip), so a ping through it stays green for a while after
		// the brokers are gone. A fresh one makes the round trip.
		tr := c.Security.Transport(&kafka.Transport{DialTimeout: 3 * time.Second, MetadataTTL: time.Hour})
		client := &kafka.Client{Addr: kafka.TCP(b), Timeout: 5 * time.Second, Transport: tr}
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
		tr.CloseIdleConnections()
		if err == nil && len(md.Brokers) > 0 {
			return nil
		}
		if err == nil {
			err = errors.New("metadata lists no brokers")
		}
		errs = append(errs, fmt.Errorf("kafka %s: %w", b, err))
	}
	return errors.Join(errs...)
}

// TopicSpec describes a topic to create.
type TopicSpec struct {
	Name       string
	Partitions int
	// Configs are topic-level settings such as cleanup.policy=compact or retention.ms.
	Configs map[string]string
	// ExactPartitions: the topic must have exactly Partitions (the one-partition journal);
	// otherwise Partitions is only what a new topic gets.
	ExactPartitions bool
	// ReplicationFactor is the replicas a new topic gets and an existing one must have at
	// least (0: the broker's default, not checked).
	ReplicationFactor int
}

// CreateTopics creates the topics that do not exist yet; existing ones are left as they are.
func CreateTopics(ctx context.Context, c Cluster, specs ...TopicSpec) error {
	conn, err := dialController(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	cfgs := make([]kafka.TopicConfig, 0, len(specs))
	for _, s := range specs {
		tc := kafka.TopicConfig{Topic: s.Name, NumPartitions: s.Partitions, ReplicationFactor: -1}
		if s.ReplicationFactor > 0 {
			tc.ReplicationFactor = s.ReplicationFactor
		}
		for k, v := range s.Configs {
			tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
		}
		cfgs = append(cfgs, tc)
	}
	if err := conn.CreateTopics(cfgs...); err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topics: %w", err)
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return waitForLeaders(ctx, c, names)
}

// waitForLeaders returns once every partition of the topics has a leader: creation is
// asynchronous, and a produce before that fails with UnknownTopicOrPartition.
func waitForLeaders(ctx context.Context, c Cluster, topics []string) error {
	client := c.Client(5 * time.Second)
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
		if err == nil && allLed(md, len(topics)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics %v not ready: %w (last metadata error: %v)", topics, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func allLed(md *kafka.MetadataResponse, want int) bool {
	if len(md.Topics) != want {
		return false
	}
	for _, t := range md.Topics {
		if t.Error != nil || len(t.Partitions) == 0 {
			return false
		}
		for _, p := range t.Partitions {
			if p.Error != nil || p.Leader.Host == "" {
				return false
			}
		}
	}
	return true
}

// DeleteTopics deletes the named topics.
func DeleteTopics(ctx context.Context, c Cluster, names ...string) error {
	conn, err := dialController(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.DeleteTopics(names...); err != nil {
		return fmt.Errorf("delete topics %v: %w", names, err)
	}
	return nil
}

// dialController connects to the cluster's controller, which topic administration must go to.
func dialController(ctx context.Context, c Cluster) (*kafka.Conn, error) {
	brokers, dialer := c.Brokers, c.Security.Dialer()
	if len(brokers) == 0 {
		return nil, errors.New("kafka: no brokers configured")
	}
	conn, err := dialer.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return nil, fmt.Errorf("dial kafka %s: %w", brokers[0], err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return nil, fmt.Errorf("find kafka controller: %w", err)
	}
	addr := net.JoinHostPort(ctrl.Host, fmt.Sprint(ctrl.Port))
	cc, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial kafka controller %s: %w", addr, err)
	}
	return cc, nil
}

// TopicCheck is what EnsureTopics found of one topic.
type TopicCheck struct {
	Name       string
	Created    bool
	Partitions int
	// Repaired are the settings that differed from the spec and were set to it, "key: was → now".
	Repaired []string
}

// EnsureTopics creates the topics that do not exist and verifies the ones that do, so no role
// relies on what broker auto-creation or an earlier hand would have made: a setting of Configs
// that differs (a status topic that is not compacted expires suspensions; a finite retention on
// the accounts topic forgets activations) is set to the spec; a partition count that differs
// where the spec requires it exactly (ExactPartitions), or a replication factor below the spec's,
// is refused, since changing either moves keys or cannot be done in place.
func EnsureTopics(ctx context.Context, c Cluster, specs ...TopicSpec) ([]TopicCheck, error) {
	tr := c.Security.Transport(&kafka.Transport{MetadataTTL: time.Hour}) // its own: a fresh view, not the shared cache
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 10 * time.Second, Transport: tr}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		return nil, fmt.Errorf("describe topics: %w", err)
	}
	existing := map[string]kafka.Topic{}
	for _, t := range md.Topics {
		if t.Error == nil {
			existing[t.Name] = t
		}
	}
	var missing []TopicSpec
	checks := make([]TopicCheck, len(specs))
	for i, s := range specs {
		checks[i] = TopicCheck{Name: s.Name, Partitions: s.Partitions}
		if _, ok := existing[s.Name]; !ok {
			missing = append(missing, s)
			checks[i].Created = true
		}
	}
	if len(missing) > 0 {
		if err := CreateTopics(ctx, c, missing...); err != nil {
			return nil, err
		}
	}
	var errs []error
	for i, s := range specs {
		t, ok := existing[s.Name]
		if !ok {
			continue
		}
		checks[i].Partitions = len(t.Partitions)
		if s.ExactPartitions && len(t.Partitions) != s.Partitions {
			errs = append(errs, fmt.Errorf("topic %s has %d partitions; it must have exactly %d: delete and recreate it (it holds state: only when that state is gone or rebuilt)",
				s.Name, len(t.Partitions), s.Partitions))
		}
		if s.ReplicationFactor > 0 {
			for _, p := range t.Partitions {
				if len(p.Replicas) < s.ReplicationFactor {
					errs = append(errs, fmt.Errorf("topic %s partition %d has %d replicas; want %d: reassign its partitions (kafka-reassign-partitions)",
						s.Name, p.ID, len(p.Replicas), s.ReplicationFactor))
					break
				}
			}
		}
		repaired, err := repairConfigs(ctx, client, s)
		if err != nil {
			errs = append(errs, err)
		}
		checks[i].Repaired = repaired
	}
	return checks, errors.Join(errs...)
}

func repairConfigs(ctx context.Context, client *kafka.Client, s TopicSpec) ([]string, error) {
	if len(s.Configs) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(s.Configs))
	for k := range s.Configs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	resp, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: s.Name, ConfigNames: keys}}})
	if err != nil {
		return nil, fmt.Errorf("describe the settings of topic %s: %w", s.Name, err)
	}
	have := map[string]string{}
	for _, r := range resp.Resources {
		if r.Error != nil {
			return nil, fmt.Errorf("describe the settings of topic %s: %w", s.Name, r.Error)
		}
		for _, e := range r.ConfigEntries {
			have[e.ConfigName] = e.ConfigValue
		}
	}
	var repaired []string
	var ops []kafka.IncrementalAlterConfigsRequestConfig
	for _, k := range keys {
		if have[k] != s.Configs[k] {
			repaired = append(repaired, fmt.Sprintf("%s: %s → %s", k, have[k], s.Configs[k]))
			ops = append(ops, kafka.IncrementalAlterConfigsRequestConfig{Name: k, Value: s.Configs[k], ConfigOperation: kafka.ConfigOperationSet})
		}
	}
	if len(ops) == 0 {
		return nil, nil
	}
	ar, err := client.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: s.Name, Configs: ops}}})
	if err == nil {
		for _, r := range ar.Resources {
			if r.Error != nil {
				err = r.Error
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("set %v on topic %s: %w", repaired, s.Name, err)
	}
	return repaired, nil
}

// TopicRetention is the topic's retention.ms (negative: records are kept for ever).
func TopicRetention(ctx context.Context, c Cluster, topic string) (time.Duration, error) {
	client := c.Client(10 * time.Second)
	v, err := topicSetting(ctx, client, topic, "retention.ms")
	if err != nil {
		return 0, err
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("retention.ms of %s is %q", topic, v)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// topicSetting is the value in force of one setting of a topic (its own, or the broker's default).
func topicSetting(ctx context.Context, client *kafka.Client, topic, name string) (string, error) {
	resp, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{name}}}})
	if err != nil {
		return "", fmt.Errorf("describe %s of %s: %w", name, topic, err)
	}
	for _, r := range resp.Resources {
		if r.Error != nil {
			return "", fmt.Errorf("describe %s of %s: %w", name, topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == name {
				return e.ConfigValue, nil
			}
		}
	}
	return "", fmt.Errorf("the broker did not say %s of %s", name, topic)
}

// Replication is what the cluster says of a topic's replicas now.
type Replication struct {
	MinInSync  int // the topic's min.insync.replicas
	Partitions int // how many the topic has
	// Short are the partitions with fewer in-sync replicas than MinInSync: with acks=all (every
	// Tally writer) a write to them is refused (NOT_ENOUGH_REPLICAS) until a replica catches up.
	Short []ShortPartition
}

// ShortPartition is a partition below its topic's min.insync.replicas.
type ShortPartition struct {
	Partition, InSync, Replicas int
}

// DescribeReplication asks a fresh view of the cluster (not kafka-go's cached metadata) for the
// in-sync replicas of every partition of topic.
func DescribeReplication(ctx context.Context, c Cluster, topic string) (Replication, error) {
	tr := c.Security.Transport(&kafka.Transport{DialTimeout: 3 * time.Second, MetadataTTL: time.Hour})
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 5 * time.Second, Transport: tr}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return Replication{}, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		if len(md.Topics) == 1 {
			err = md.Topics[0].Error
		}
		return Replication{}, fmt.Errorf("describe topic %s: %v", topic, err)
	}
	v, err := topicSetting(ctx, client, topic, "min.insync.replicas")
	if err != nil {
		return Replication{}, err
	}
	r := Replication{}
	if r.MinInSync, err = strconv.Atoi(v); err != nil {
		return Replication{}, fmt.Errorf("min.insync.replicas of %s is %q", topic, v)
	}
	r.Partitions = len(md.Topics[0].Partitions)
	for _, p := range md.Topics[0].Partitions {
		if len(p.Isr) < r.MinInSync {
			r.Short = append(r.Short, ShortPartition{Partition: p.ID, InSync: len(p.Isr), Replicas: len(p.Replicas)})
		}
	}
	sort.Slice(r.Short, func(i, j int) bool { return r.Short[i].Partition < r.Short[j].Partition })
	return r, nil
}

// CloudEventHeaders mark a record holding one structured-mode CloudEvent, as the CloudEvents
// Kafka binding requires (content-type: application/cloudevents+json): without it the SDKs'
// Kafka receivers refuse the record ("unknown Message encoding"). A fresh slice each call: kafka-go
// may keep it with the message.
func CloudEventHeaders() []kafka.Header {
	return []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents+json")}}
}
