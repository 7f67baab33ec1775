package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/kafkax"
)

// Entry is one line of the settle worker's log.
type Entry struct {
	Line []byte // nil for usage: see Bytes
	// Source is "topic/partition" and Offset the offset of a journalled input (empty for usage
	// and ticks).
	Source     string
	Offset     int64
	RecordedAt time.Time
	// Tick: a settlement instant; Covered is the usage offsets it and the ticks before it cover.
	Tick    bool
	Covered Offsets
	// JournalOffset is the offset of the journal record (0 for usage lines, which are not in it).
	JournalOffset int64
	// Usage is a usage line's event, received at Received (nil for journal records).
	Usage    *contract.Usage
	Received time.Time
}

// Bytes is the entry's log line.
func (e Entry) Bytes() []byte {
	if e.Usage != nil {
		return UsageLine(*e.Usage, e.Received)
	}
	return e.Line
}

// Journal walks the settle worker's log in order: each journalled input, and before each tick the
// usage records the tick covers that the previous one did not. Copies a write retry left in the
// journal are not part of the log (journalCopies).
func Journal(ctx context.Context, c kafkax.Cluster, topic string, ch driver.Conn, fn func(Entry) error) error {
	return journalFrom(ctx, c, topic, 0, Offsets{}, &journalCopies{}, func(from, to Offsets) error {
		return usageRows(ctx, ch, from, to, func(u contract.Usage, received time.Time) error {
			return fn(Entry{Usage: &u, Received: received})
		})
	}, fn)
}

// journalCopies tells the records a write retry put in the journal a second time from the log.
// kafka-go has no idempotent producer: when a broker dies after appending a write but before
// answering (a leader SIGKILLed on a cluster), the writer sends it again to the new leader and
// the journal holds those records twice, the same bytes at later offsets. An input is known by
// its source position, and a source's inputs are journalled in offset order (a restart resumes
// after the last one journalled), so an input at or below the last one seen from its source is
// a copy; ticks are month-end instants, strictly increasing, so a tick not after the last is one.
// Recovery and Export (hence replay) apply the same rule, so they still see the same log.
type journalCopies struct {
	next     map[string]int64 // per source, the offset after its last input seen
	lastTick time.Time
	dropped  int
}

// copied says whether e repeats an entry already walked, and remembers e when it does not.
func (c *journalCopies) copied(e Entry) bool {
	switch {
	case e.Tick:
		if !c.lastTick.IsZero() && !e.RecordedAt.After(c.lastTick) {
			c.dropped++
			return true
		}
		c.lastTick = e.RecordedAt
	case e.Source != "":
		if c.next == nil {
			c.next = map[string]int64{}
		}
		if next, ok := c.next[e.Source]; ok && e.Offset < next {
			c.dropped++
			return true
		}
		c.next[e.Source] = e.Offset + 1
	}
	return false
}

// journalFrom walks the journal from offset from, where the usage up to covered has been walked
// already (a snapshot's point, with copies knowing its inputs and tick): before each tick,
// usage(previous tick's offsets, the tick's) walks the usage between them, then fn gets the
// tick; fn gets every other record as it comes, except copies.
func journalFrom(ctx context.Context, c kafkax.Cluster, topic string, from int64, covered Offsets, copies *journalCopies,
	usage func(from, to Offsets) error, fn func(Entry) error) error {
	return kafkax.ReadPartitionFrom(ctx, c, topic, 0, from, func(m kafka.Message) error {
		e, err := journalEntry(m)
		if err != nil {
			return err
		}
		if copies.copied(e) {
			return nil
		}
		if e.Tick {
			if err := usage(covered, e.Covered); err != nil {
				return err
			}
			covered = e.Covered
		}
		return fn(e)
	})
}

// journalEntry decodes one journal record.
func journalEntry(m kafka.Message) (Entry, error) {
	ev, err := cloudevent.Decode(m.Value)
	if err != nil {
		return Entry{}, fmt.Errorf("journal offset %d is not a CloudEvent: %w", m.Offset, err)
	}
	if ev.Type == contract.ClockTickType {
		var d contract.ClockTickData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return Entry{}, fmt.Errorf("journal tick at offset %d: %w", m.Offset, err)
		}
		to := Offsets{}
		for p, o := range d.Offsets {
			n, err := strconv.ParseInt(p, 10, 32)
			if err != nil {
				return Entry{}, fmt.Errorf("journal tick at offset %d: partition %q", m.Offset, p)
			}
			to[int32(n)] = o
		}
		return Entry{Line: m.Value, RecordedAt: ev.Time, Tick: true, Covered: to, JournalOffset: m.Offset}, nil
	}
	e := Entry{Line: m.Value, RecordedAt: ev.RecordedAt, JournalOffset: m.Offset}
	h := map[string]string{}
	for _, x := range m.Headers {
		h[x.Key] = string(x.Value)
	}
	if t := h["tally-source-topic"]; t != "" {
		e.Source = t + "/" + h["tally-source-partition"]
		e.Offset, _ = strconv.ParseInt(h["tally-source-offset"], 10, 64)
	}
	return e, nil
}

// Export writes the settle worker's log as JSON lines: `tally replay` over it reproduces what the
// worker emitted.
func Export(ctx context.Context, c kafkax.Cluster, topic string, ch driver.Conn, out io.Writer) (int, error) {
	n := 0
	err := Journal(ctx, c, topic, ch, func(e Entry) error {
		n++
		if _, err := out.Write(e.Bytes()); err != nil {
			return err
		}
		_, err := out.Write([]byte("\n"))
		return err
	})
	return n, err
}
