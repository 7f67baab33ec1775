package worker

import (
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// snapshotMeta is where a snapshot sits: it holds the journal up to JournalOffset (a tick, or
// the last record replayed at a recovery), with the worker's position in every topic it reads, so
// a restart resumes from there.
type snapshotMeta struct {
	JournalOffset int64            `json:"journal_offset"`
	Tick          time.Time        `json:"tick"`
	Clock         time.Time        `json:"clock"`
	First         time.Time        `json:"first"`
	Fed           Offsets          `json:"usage_offsets"`
	Next          map[string]int64 `json:"input_offsets"`   // "topic/partition" → next offset
	Billing       map[int]int64    `json:"billing_offsets"` // end offsets after the settlement's events
}

// snapshotStore keeps the settle worker's snapshots in ClickHouse (settle_snapshots).
type snapshotStore struct {
	ch    driver.Conn
	topic string // the journal topic: one worker's snapshots
}

// keepSnapshots: the latest two, so a snapshot cut short by a crash never leaves none.
const keepSnapshots = 2

// save writes a snapshot (state is settle.Replayer.Snapshot's output) and drops older ones.
func (s *snapshotStore) save(ctx context.Context, meta snapshotMeta, write func(io.Writer) error) (int, error) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err := write(zw); err != nil {
		return 0, err
	}
	if err := zw.Close(); err != nil {
		return 0, err
	}
	m, err := json.Marshal(meta)
	if err != nil {
		return 0, err
	}
	b, err := s.ch.PrepareBatch(ctx, "INSERT INTO settle_snapshots (journal_topic, journal_offset, settled_at, meta, state, written_at)")
	if err != nil {
		return 0, fmt.Errorf("prepare snapshot: %w", err)
	}
	if err := b.Append(s.topic, meta.JournalOffset, meta.Tick.UTC(), string(m), buf.String(), time.Now().UTC()); err != nil {
		_ = b.Abort()
		return 0, err
	}
	if err := b.Send(); err != nil {
		return 0, fmt.Errorf("write snapshot: %w", err)
	}
	err = s.ch.Exec(ctx, `DELETE FROM settle_snapshots WHERE journal_topic = ? AND journal_offset < (
		SELECT min(journal_offset) FROM (SELECT journal_offset FROM settle_snapshots WHERE journal_topic = ? ORDER BY journal_offset DESC LIMIT ?))`,
		s.topic, s.topic, keepSnapshots)
	if err != nil {
		err = fmt.Errorf("%w: %w", errOlderSnapshotsKept, err)
	}
	return buf.Len(), err
}

// errOlderSnapshotsKept: the snapshot is saved, dropping older ones failed (they only take space).
var errOlderSnapshotsKept = errors.New("snapshot saved; dropping older snapshots failed")

// latest returns the newest snapshot's position and a reader of its state (nil when there is none).
func (s *snapshotStore) latest(ctx context.Context) (*snapshotMeta, io.Reader, error) {
	var meta, state string
	err := s.ch.QueryRow(ctx, `SELECT meta, state FROM settle_snapshots WHERE journal_topic = ? ORDER BY journal_offset DESC, written_at DESC LIMIT 1`,
		s.topic).Scan(&meta, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the latest snapshot: %w", err)
	}
	var m snapshotMeta
	if err := json.Unmarshal([]byte(meta), &m); err != nil {
		return nil, nil, fmt.Errorf("snapshot meta %q: %w", meta, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader([]byte(state)))
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot at journal offset %d: %w", m.JournalOffset, err)
	}
	return &m, zr, nil
}
