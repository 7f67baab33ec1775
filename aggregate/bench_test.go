package aggregate

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/settle"
)

// BenchmarkFold: decode, validate, dedup and add one usage record (one core), minimal events
// and events as the official SDKs write them (subject, datacontenttype, an extension).
func BenchmarkFold(b *testing.B) {
	shapes := map[string]func(i int) []byte{
		"minimal": func(i int) []byte {
			return rec(0, fmt.Sprintf("e%d", i), fmt.Sprintf("acct-%d", i%5000), "image-tagging", 1+i%9, "2026-10-05T10:00:00+08:00").Value
		},
		"sdk": func(i int) []byte {
			return fmt.Appendf(nil, `{"specversion":"1.0","id":"e%d","source":"//gateway.example/eu-1","type":"tally.usage.v1","subject":"acct-%d","datacontenttype":"application/json","time":"2026-10-05T10:00:00+08:00","data":{"account":"acct-%d","calls":%d,"service":"image-tagging"},"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`,
				i, i%5000, i%5000, 1+i%9)
		},
	}
	for name, value := range shapes {
		b.Run(name, func(b *testing.B) {
			recs := make([]Record, 100_000)
			for i := range recs {
				recs[i] = Record{Time: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Value: value(i)}
			}
			p := NewPartition(PartitionConfig{Window: 1000, Location: shanghai, Services: settle.DefaultCatalogue()}, nil, Mark{}) // ids repeat every 100,000 records: never within the window, so every record is added
			b.ResetTimer()
			for i := range b.N {
				r := recs[i%len(recs)]
				r.Offset = int64(i)
				p.Fold(r)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkWindowMemory measures the heap held per remembered identity.
func BenchmarkWindowMemory(b *testing.B) {
	const n = 1_000_000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("acct-%06d\x00image-tagging\x002026-10\x00req-%012d", i%5000, i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	w := NewWindow(n)
	for _, id := range ids {
		w.Seen(id)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/id-overhead")
	b.ReportMetric(float64(len(ids[0])), "bytes/id-text")
	runtime.KeepAlive(w)
	runtime.KeepAlive(ids)
}

// BenchmarkKeyMemory measures the heap held per active key (account, service, month) of a
// partition's totals, including the per-account index.
func BenchmarkKeyMemory(b *testing.B) {
	const accounts = 100_000
	services := settle.DefaultCatalogue().ServiceIDs()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p := NewPartition(PartitionConfig{Window: 1, Location: shanghai, Services: settle.DefaultCatalogue()}, nil, Mark{})
	per := contract.Period{Year: 2026, Month: 10}
	for a := range accounts {
		acct := fmt.Sprintf("acct-%06d", a)
		for _, s := range services {
			p.add(Key{Account: acct, Service: s, Period: per}, 1)
		}
	}
	clear(p.dirty)
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(accounts*len(services)), "bytes/key")
	runtime.KeepAlive(p)
}
