package kafkax

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
)

// GroupConfig configures RunGroup.
type GroupConfig struct {
	Brokers  []string
	Security Security
	Topic    string
	Group    string
	// SessionTimeout: how soon the group notices a member that died.
	SessionTimeout time.Duration
}

// PartitionFunc consumes one assigned partition until ctx ends (the generation ended or the
// process stops). An error makes RunGroup call it again after a second, while the partition is
// still assigned: the function must resume from its own durable progress.
type PartitionFunc func(ctx context.Context, gen *kafka.Generation, partition int) error

// RunGroup joins the consumer group and runs fn for each partition assigned to this member, one
// goroutine per partition, generation after generation, until ctx ends. Offsets committed to the
// group are for lag monitoring; where to resume is the caller's business (Tally keeps it in
// ClickHouse, beside the data it wrote).
func RunGroup(ctx context.Context, cfg GroupConfig, log *slog.Logger, onError func(), fn PartitionFunc) error {
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: cfg.Group, Brokers: cfg.Brokers, Dialer: cfg.Security.Dialer(), Topics: []string{cfg.Topic},
		StartOffset: kafka.FirstOffset, SessionTimeout: cfg.SessionTimeout, RebalanceTimeout: cfg.SessionTimeout,
		HeartbeatInterval: cfg.SessionTimeout / 6, JoinGroupBackoff: time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) { log.Warn("kafka consumer group: " + fmt.Sprintf(msg, args...)) }),
	})
	if err != nil {
		return fmt.Errorf("join consumer group %s: %w", cfg.Group, err)
	}
	defer group.Close()
	for {
		gen, err := group.Next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, kafka.ErrGroupClosed) {
				return nil
			}
			log.Warn("consumer group generation failed; retrying", "group", cfg.Group, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		parts := gen.Assignments[cfg.Topic]
		log.Info("partitions assigned", "group", cfg.Group, "generation", gen.ID, "partitions", len(parts))
		for _, a := range parts {
			partition := a.ID
			gen.Start(func(ctx context.Context) {
				for ctx.Err() == nil {
					err := fn(ctx, gen, partition)
					if err == nil || ctx.Err() != nil {
						return
					}
					if onError != nil {
						onError()
					}
					log.Error("partition failed; retrying from its recorded progress", "group", cfg.Group, "partition", partition, "err", err)
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
			})
		}
	}
}
