package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tally-billing/tally/aggregate"
	"github.com/tally-billing/tally/contract"
)

// Checkpoints stores partition totals in ClickHouse (aggregate_totals, aggregate_checkpoints).
type Checkpoints struct {
	ch       driver.Conn
	consumer string
	topic    string
}

// Load returns the partition's totals as of its last committed checkpoint, the mark they stand
// at (zero and no totals when there is none), and how many rows hold them.
func (c *Checkpoints) Load(ctx context.Context, partition int) (map[aggregate.Key]int64, aggregate.Mark, int, error) {
	var next int64
	var newest uint32
	if err := c.ch.QueryRow(ctx, "SELECT max(next_offset), argMax(newest_period, next_offset) FROM aggregate_checkpoints WHERE consumer = ? AND kafka_topic = ? AND kafka_partition = ?",
		c.consumer, c.topic, int32(partition)).Scan(&next, &newest); err != nil {
		return nil, aggregate.Mark{}, 0, fmt.Errorf("read checkpoint of partition %d: %w", partition, err)
	}
	totals := map[aggregate.Key]int64{}
	if next == 0 {
		return totals, aggregate.Mark{}, 0, nil
	}
	mark := aggregate.Mark{Next: next}
	if newest != 0 {
		mark.Newest = contract.PeriodOfYYYYMM(newest)
	}
	rows, err := c.ch.Query(ctx, `SELECT account, service, period, argMax(calls, next_offset), count() FROM aggregate_totals
		WHERE consumer = ? AND kafka_topic = ? AND kafka_partition = ? AND next_offset <= ?
		GROUP BY account, service, period`, c.consumer, c.topic, int32(partition), next)
	if err != nil {
		return nil, aggregate.Mark{}, 0, fmt.Errorf("read totals of partition %d: %w", partition, err)
	}
	defer rows.Close()
	stored := 0
	for rows.Next() {
		var k aggregate.Key
		var period uint32
		var calls, n uint64
		if err := rows.Scan(&k.Account, &k.Service, &period, &calls, &n); err != nil {
			return nil, aggregate.Mark{}, 0, err
		}
		k.Period = contract.PeriodOfYYYYMM(period)
		totals[k] = int64(calls)
		stored += int(n)
	}
	return totals, mark, stored, rows.Err()
}

// Save writes the changed totals, then commits the checkpoint at mark (openFrom: the oldest
// month still open, zero when all are).
func (c *Checkpoints) Save(ctx context.Context, partition int, changed map[aggregate.Key]int64, mark aggregate.Mark, openFrom contract.Period) error {
	next := mark.Next
	token := fmt.Sprintf("agg-%s-%s-%d-%d", c.consumer, c.topic, partition, next)
	if len(changed) > 0 {
		ictx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_deduplication_token": token}))
		b, err := c.ch.PrepareBatch(ictx, "INSERT INTO aggregate_totals (consumer, kafka_topic, kafka_partition, next_offset, account, service, period, calls)")
		if err != nil {
			return fmt.Errorf("prepare checkpoint: %w", err)
		}
		for k, v := range changed {
			if err := b.Append(c.consumer, c.topic, int32(partition), next, k.Account, k.Service, k.Period.YYYYMM(), uint64(v)); err != nil {
				_ = b.Abort()
				return err
			}
		}
		if err := b.Send(); err != nil {
			return fmt.Errorf("write checkpoint totals: %w", err)
		}
	}
	var newest, from uint32
	if !mark.Newest.IsZero() {
		newest = mark.Newest.YYYYMM()
	}
	if !openFrom.IsZero() {
		from = openFrom.YYYYMM()
	}
	if err := c.ch.Exec(ctx, "INSERT INTO aggregate_checkpoints (consumer, kafka_topic, kafka_partition, next_offset, keys, written_at, newest_period, open_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
		c.consumer, c.topic, int32(partition), next, uint32(len(changed)), time.Now().UTC(), newest, from); err != nil {
		return fmt.Errorf("commit checkpoint: %w", err)
	}
	return nil
}

// DropBefore deletes the partition's total rows written before offset: call it only once a
// checkpoint at or after offset that holds every key of the partition is committed.
func (c *Checkpoints) DropBefore(ctx context.Context, partition int, offset int64) error {
	return c.ch.Exec(ctx, "DELETE FROM aggregate_totals WHERE consumer = ? AND kafka_topic = ? AND kafka_partition = ? AND next_offset < ?",
		c.consumer, c.topic, int32(partition), offset)
}
