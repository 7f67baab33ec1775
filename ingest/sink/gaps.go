package sink

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/telemetry"
)

// kafka-go never reports records it could not read: a reader asked for an offset before the log
// start (retention deleted the records, or an admin deleted them) moves to the log start without
// a word (reader.go, initialize and the OffsetOutOfRange case of run). The sink would write the
// records after the hole and its progress would pass it: usage lost with no trace. So the sink
// checks the log start itself, when it resumes and whenever offsets jump, and stops the partition
// on a hole until an operator acknowledges it (`tally gaps ack`).

// Gap reasons.
const (
	// GapDeleted: records [From, To) were deleted from Kafka before the sink wrote them.
	GapDeleted = "deleted_before_read"
	// GapAhead: the stored progress To is past the partition's end From: the topic was recreated
	// or restored from an older state, and new records would be taken for ones already written.
	GapAhead = "progress_past_end"
)

// GapError stops a partition: the sink cannot go on without losing records.
type GapError struct {
	Topic     string
	Partition int
	Reason    string
	From, To  int64
}

func (g *GapError) Error() string {
	switch g.Reason {
	case GapDeleted:
		return fmt.Sprintf("records [%d, %d) of %s/%d were deleted from Kafka before the sink wrote them (retention overtook a sink or ClickHouse that was down or behind): %d accepted records are not in usage_events",
			g.From, g.To, g.Topic, g.Partition, g.To-g.From)
	default:
		return fmt.Sprintf("the sink's progress in ClickHouse (%d) is past the end of %s/%d (%d): the topic was recreated or restored from an older state; records written from now on would be skipped or mistaken for old ones",
			g.To, g.Topic, g.Partition, g.From)
	}
}

// checkResume says whether reading partition from expected (its stored progress) loses records.
func (s *Sink) checkResume(ctx context.Context, partition int, expected int64) error {
	first, end, err := kafkax.PartitionBounds(ctx, kafkax.Cluster{Brokers: s.cfg.Brokers, Security: s.cfg.Security}, s.cfg.Topic, partition)
	if err != nil {
		return err
	}
	switch {
	case expected < first:
		return &GapError{Topic: s.cfg.Topic, Partition: partition, Reason: GapDeleted, From: expected, To: first}
	case expected > end:
		return &GapError{Topic: s.cfg.Topic, Partition: partition, Reason: GapAhead, From: end, To: expected}
	}
	return nil
}

// gapOf is the gap a *kafkax.DeletedError from reading the partition describes, or err as it is.
func gapOf(err error) error {
	var gone *kafkax.DeletedError
	if errors.As(err, &gone) {
		return &GapError{Topic: gone.Topic, Partition: gone.Partition, Reason: GapDeleted, From: gone.From, To: gone.First}
	}
	return err
}

// stopped holds the partition, loudly (error log, metric, readiness), until the gap is
// acknowledged (its progress moves to the gap's end) or ctx ends.
func (s *Sink) stopped(ctx context.Context, gap *GapError) error {
	part := strconv.Itoa(gap.Partition)
	s.setStopped(gap.Partition, gap)
	defer s.setStopped(gap.Partition, nil)
	s.metrics.Gaps.WithLabelValues(gap.Reason).Inc()
	gauge := s.metrics.Stopped.WithLabelValues(part, gap.Reason)
	telemetry.SetInt(gauge, gap.To-gap.From)
	defer gauge.Set(0)
	recorded := false
	var lastLog time.Time
	for {
		if gap.Reason == GapDeleted && !recorded {
			recorded = s.recordGap(ctx, gap) == nil
		}
		if time.Since(lastLog) >= 10*time.Minute {
			lastLog = time.Now()
			what := "restore the records from the gateways or a backup if you can, then acknowledge the loss with " +
				fmt.Sprintf("`tally gaps ack --partition %d --from %d --by <name>`; the partition is stopped until then", gap.Partition, gap.From)
			if gap.Reason == GapAhead {
				what = "restore the topic, or point Tally at a new ClickHouse database; the partition stays stopped"
			}
			s.log.Error("sink: USAGE AT RISK: "+gap.Error(), "topic", gap.Topic, "partition", gap.Partition, "from_offset", gap.From, "to_offset", gap.To,
				"reason", gap.Reason, "what_to_do", what)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.cfg.GapPollInterval):
		}
		if gap.Reason != GapDeleted {
			continue
		}
		next, err := s.progress(ctx, gap.Partition)
		if err == nil && next != kafka.FirstOffset && next >= gap.To {
			s.log.Warn("sink: gap acknowledged; the partition goes on", "partition", gap.Partition, "from_offset", gap.From, "to_offset", gap.To)
			return nil
		}
	}
}

func (s *Sink) setStopped(partition int, gap *GapError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gap == nil {
		delete(s.stops, partition)
	} else {
		s.stops[partition] = gap
	}
}

// Ready fails while a partition is stopped on a gap.
func (s *Sink) Ready(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.stops) == 0 {
		return nil
	}
	var parts []int
	for p := range s.stops {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	var msgs []string
	for _, p := range parts {
		g := s.stops[p]
		msgs = append(msgs, fmt.Sprintf("partition %d stopped (%s, offsets %d-%d)", p, g.Reason, g.From, g.To))
	}
	return errors.New(strings.Join(msgs, "; ") + ": see `tally gaps`")
}

func (s *Sink) recordGap(ctx context.Context, g *GapError) error {
	err := s.ch.Exec(ctx, "INSERT INTO usage_gaps (consumer, kafka_topic, kafka_partition, from_offset, to_offset, detected_at) VALUES (?, ?, ?, ?, ?, ?)",
		s.cfg.Group, g.Topic, int32(g.Partition), g.From, g.To, time.Now().UTC())
	if err != nil {
		s.log.Warn("sink: could not record the gap in usage_gaps (retrying)", "partition", g.Partition, "err", err)
	}
	return err
}

// Gap is a row of usage_gaps: a range of usage records lost before the sink wrote them.
type Gap struct {
	Consumer, Topic string
	Partition       int32
	From, To        int64
	DetectedAt      time.Time
	AcknowledgedAt  time.Time // zero: not acknowledged; the partition is stopped
	AcknowledgedBy  string
	Note            string
}

// ListGaps returns every recorded gap, oldest first.
func ListGaps(ctx context.Context, ch driver.Conn) ([]Gap, error) {
	rows, err := ch.Query(ctx, `SELECT consumer, kafka_topic, kafka_partition, from_offset, to_offset, min(detected_at), max(acknowledged_at),
		argMax(acknowledged_by, acknowledged_at), argMax(note, acknowledged_at)
		FROM usage_gaps GROUP BY consumer, kafka_topic, kafka_partition, from_offset, to_offset ORDER BY min(detected_at), kafka_partition`)
	if err != nil {
		return nil, fmt.Errorf("read usage_gaps: %w", err)
	}
	defer rows.Close()
	var out []Gap
	for rows.Next() {
		var g Gap
		if err := rows.Scan(&g.Consumer, &g.Topic, &g.Partition, &g.From, &g.To, &g.DetectedAt, &g.AcknowledgedAt, &g.AcknowledgedBy, &g.Note); err != nil {
			return nil, err
		}
		if g.AcknowledgedAt.Unix() <= 0 {
			g.AcknowledgedAt = time.Time{}
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// AcknowledgeGap accepts the loss of a recorded gap: it moves the consumer's progress of the
// partition to the gap's end (the stopped sink goes on from there) and records who did it.
func AcknowledgeGap(ctx context.Context, ch driver.Conn, consumer, topic string, partition int32, from int64, by, note string) (Gap, error) {
	if by == "" {
		return Gap{}, errors.New("acknowledge a gap: say who acknowledges it (--by)")
	}
	gaps, err := ListGaps(ctx, ch)
	if err != nil {
		return Gap{}, err
	}
	for _, g := range gaps {
		if g.Consumer != consumer || g.Topic != topic || g.Partition != partition || g.From != from {
			continue
		}
		if !g.AcknowledgedAt.IsZero() {
			return g, fmt.Errorf("the gap at %s/%d offset %d was acknowledged already, at %s by %s", topic, partition, from, g.AcknowledgedAt.Format(time.RFC3339), g.AcknowledgedBy)
		}
		if err := ch.Exec(ctx, "INSERT INTO sink_progress (consumer, kafka_topic, kafka_partition, next_offset, rows, dead_letters, written_at) VALUES (?, ?, ?, ?, 0, 0, ?)",
			consumer, topic, partition, g.To, time.Now().UTC()); err != nil {
			return g, fmt.Errorf("move the progress past the gap: %w", err)
		}
		g.AcknowledgedAt, g.AcknowledgedBy, g.Note = time.Now().UTC(), by, note
		if err := ch.Exec(ctx, "INSERT INTO usage_gaps (consumer, kafka_topic, kafka_partition, from_offset, to_offset, detected_at, acknowledged_at, acknowledged_by, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
			consumer, topic, partition, g.From, g.To, g.DetectedAt, g.AcknowledgedAt, by, note); err != nil {
			return g, fmt.Errorf("record the acknowledgement (the progress has moved): %w", err)
		}
		return g, nil
	}
	return Gap{}, fmt.Errorf("no gap of consumer %s at %s/%d offset %d is recorded (see `tally gaps`)", consumer, topic, partition, from)
}
