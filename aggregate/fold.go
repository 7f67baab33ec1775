// Package aggregate keeps the running monthly totals per (account, service, billing month) that
// gateways, dashboards and support look at during the month.
//
// State is kept per Kafka partition of the usage topic: an account's events all land in one
// partition, so a partition's totals are complete for its accounts and move whole on a rebalance.
// A partition's state is a pure function of the records before its next offset:
//
//   - totals add the calls of every valid record whose identity (account, service, month, id) is
//     not among the identities of the previous Window records (gateway retries);
//   - checkpoints store the totals with the offset they include; a restart loads the checkpoint,
//     re-reads the Window records before it to rebuild the dedup window, and continues from there,
//     so totals after a crash are exactly what they would have been.
//
// Duplicates further apart than the window are counted twice here; bills never depend on these
// totals (settlement recounts from ClickHouse), and `tally reconcile` reports any difference.
package aggregate

import (
	"sync"
	"time"

	"github.com/tally-billing/tally/contract"
)

// Key names one running total.
type Key struct {
	Account string
	Service string
	Period  contract.Period
}

// Window remembers the identities of the last N records, to drop retries. Memory: about 72 bytes
// per remembered record plus the identity's own length (BenchmarkWindowMemory, BENCHMARKS.md).
type Window struct {
	ring  []string
	next  int
	full  bool
	count map[string]int
}

// NewWindow remembers n records (n ≥ 1).
func NewWindow(n int) *Window {
	return &Window{ring: make([]string, max(n, 1)), count: make(map[string]int, max(n, 1))}
}

// Seen reports whether id is among the remembered records, then remembers it as the newest
// (forgetting the oldest). An empty id (an invalid record) takes a slot but matches nothing.
func (w *Window) Seen(id string) bool {
	dup := id != "" && w.count[id] > 0
	if w.full {
		old := w.ring[w.next]
		if old != "" {
			if w.count[old]--; w.count[old] == 0 {
				delete(w.count, old)
			}
		}
	}
	w.ring[w.next] = id
	if id != "" {
		w.count[id]++
	}
	w.next++
	if w.next == len(w.ring) {
		w.next, w.full = 0, true
	}
	return dup
}

// Len is the number of records remembered.
func (w *Window) Len() int {
	if w.full {
		return len(w.ring)
	}
	return w.next
}

// Partition is the fold state of one usage partition. Methods are safe for concurrent use by
// one folding goroutine and any number of readers.
type Partition struct {
	mu        sync.RWMutex
	cfg       PartitionConfig
	totals    map[Key]int64
	byAccount map[string][]Key // index of totals for the query API
	dirty     map[Key]struct{}
	window    *Window
	mark      Mark
	evicted   contract.Period // totals of months before it have been dropped

	folded, duplicates, invalid, closed int64
}

// PartitionConfig is how a partition folds.
type PartitionConfig struct {
	// Window is how many records back a retry is recognised.
	Window int
	// OpenMonths is how many billing months keep running totals, counting back from the month
	// of the newest receive time folded (so it is a function of the records, like everything
	// else here): with 3, in November, November, October and September. Records of older months
	// are counted as closed, not folded, and older totals leave memory: a month's figures are
	// then the exact recount of usage_events. 0 keeps every month forever.
	OpenMonths int
	Location   *time.Location
	Services   contract.ServiceChecker
	// Home, when set, is the partition every record of an account must be on for its totals to
	// be whole (ingest routes by murmur2 of the account), and ID is this partition's number. A
	// record of an account homed elsewhere is folded all the same, and Fold reports it.
	Home func(account string) int
	ID   int
}

// Mark is where a partition's state stands: the offset of the next record to fold, and the
// billing month of the newest receive time folded (which months are open).
type Mark struct {
	Next   int64
	Newest contract.Period
}

// NewPartition starts a partition at mark with the given totals (from a checkpoint); totals of
// months closed at mark are left out.
func NewPartition(cfg PartitionConfig, totals map[Key]int64, mark Mark) *Partition {
	p := &Partition{cfg: cfg, totals: map[Key]int64{}, byAccount: map[string][]Key{}, dirty: map[Key]struct{}{},
		window: NewWindow(cfg.Window), mark: mark}
	p.evicted = p.openFrom()
	for k, v := range totals {
		if !p.isClosed(k.Period) {
			p.add(k, v)
		}
	}
	clear(p.dirty)
	return p
}

// openFrom is the oldest open month (zero: every month is open).
func (p *Partition) openFrom() contract.Period {
	if p.cfg.OpenMonths <= 0 || p.mark.Newest.IsZero() {
		return contract.Period{}
	}
	from := p.mark.Newest
	for range p.cfg.OpenMonths - 1 {
		from = from.Prev()
	}
	return from
}

func (p *Partition) isClosed(per contract.Period) bool {
	from := p.openFrom()
	return !from.IsZero() && per.Before(from)
}

// OpenFrom is the oldest month whose running total is kept (zero: every month).
func (p *Partition) OpenFrom() contract.Period {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.openFrom()
}

// Record is what the fold needs of a Kafka record.
type Record struct {
	Offset int64
	Value  []byte
	Time   time.Time // when ingest received it
}

// identity of a usage event, as one string for the window.
func identity(u contract.Usage, p contract.Period) string {
	return u.Account + "\x00" + u.Service + "\x00" + p.String() + "\x00" + u.ID
}

// decode validates a record as usage; ok is false for records the sink dead-letters.
func (p *Partition) decode(r Record) (contract.Usage, contract.Period, bool) {
	u, err := contract.DecodeUsage(r.Value, r.Time, p.cfg.Services)
	if err != nil {
		return contract.Usage{}, contract.Period{}, false
	}
	return u, contract.PeriodOf(u.Time, p.cfg.Location), true
}

// Warm remembers records that come before the partition's start offset, without folding them:
// after a restart it rebuilds the dedup window from the records before the checkpoint.
func (p *Partition) Warm(r Record) {
	u, per, ok := p.decode(r)
	id := ""
	if ok {
		id = identity(u, per)
	}
	p.mu.Lock()
	p.window.Seen(id)
	p.mu.Unlock()
}

// Fold adds one record. Records must come in offset order from the partition's next offset.
// misrouted is set, with the record's account and month, when the account is homed on another
// partition (PartitionConfig.Home): its total here is partial, and a retry on another partition
// is counted on each.
func (p *Partition) Fold(r Record) (misrouted bool, account string, per contract.Period) {
	u, per, ok := p.decode(r)
	if ok && p.cfg.Home != nil && p.cfg.Home(u.Account) != p.cfg.ID {
		misrouted, account = true, u.Account
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mark.Next = r.Offset + 1
	if !r.Time.IsZero() {
		if recv := contract.PeriodOf(r.Time, p.cfg.Location); p.mark.Newest.Before(recv) {
			p.mark.Newest = recv
		}
	}
	if !ok {
		p.window.Seen("")
		p.invalid++
		return false, "", contract.Period{}
	}
	if p.window.Seen(identity(u, per)) {
		p.duplicates++
		return misrouted, account, per
	}
	if p.isClosed(per) {
		p.closed++
		return misrouted, account, per
	}
	p.add(Key{Account: u.Account, Service: u.Service, Period: per}, u.Calls)
	p.folded++
	return misrouted, account, per
}

func (p *Partition) add(k Key, calls int64) {
	if _, ok := p.totals[k]; !ok {
		p.byAccount[k.Account] = append(p.byAccount[k.Account], k)
	}
	p.totals[k] += calls
	p.dirty[k] = struct{}{}
}

// Next is the offset of the next record to fold.
func (p *Partition) Next() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.mark.Next
}

// TakeDirty returns the totals changed since the last call, and the mark they stand at. Totals
// of months closed since the last call leave memory here, once their last change is taken.
func (p *Partition) TakeDirty() (map[Key]int64, Mark) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Key]int64, len(p.dirty))
	for k := range p.dirty {
		out[k] = p.totals[k]
	}
	clear(p.dirty)
	if from := p.openFrom(); p.evicted.Before(from) {
		p.evict(from)
	}
	return out, p.mark
}

// evict drops the totals of months before from (a month at a time passes: O(keys) monthly).
func (p *Partition) evict(from contract.Period) {
	for k := range p.totals {
		if k.Period.Before(from) {
			delete(p.totals, k)
		}
	}
	for a, keys := range p.byAccount {
		kept := keys[:0]
		for _, k := range keys {
			if !k.Period.Before(from) {
				kept = append(kept, k)
			}
		}
		if len(kept) == 0 {
			delete(p.byAccount, a)
		} else {
			p.byAccount[a] = kept
		}
	}
	p.evicted = from
}

// Keys is the number of totals.
func (p *Partition) Keys() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.totals)
}

// Restore marks keys dirty again after a failed checkpoint write (those still held).
func (p *Partition) Restore(keys map[Key]int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range keys {
		if _, ok := p.totals[k]; ok {
			p.dirty[k] = struct{}{}
		}
	}
}

// Account returns the account's totals for a period, by service.
func (p *Partition) Account(account string, per contract.Period) map[string]int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := map[string]int64{}
	for _, k := range p.byAccount[account] {
		if k.Period == per {
			out[k.Service] = p.totals[k]
		}
	}
	return out
}

// Totals copies every total (for reconciliation and tests), sorted keys not guaranteed.
func (p *Partition) Totals() map[Key]int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make(map[Key]int64, len(p.totals))
	for k, v := range p.totals {
		out[k] = v
	}
	return out
}

// Closed is the number of records of closed months (not folded: too old for running totals).
func (p *Partition) Closed() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.closed
}

// Stats reports records folded, dropped as duplicates and skipped as invalid.
func (p *Partition) Stats() (folded, duplicates, invalid int64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.folded, p.duplicates, p.invalid
}
