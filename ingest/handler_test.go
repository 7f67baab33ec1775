package ingest_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/ingest/producer"
	"github.com/tally-billing/tally/internal/apikey"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
)

var clock = time.Date(2026, 10, 5, 12, 0, 0, 0, time.UTC)

func usageJSON(id, account, service string, calls int) string {
	return fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"gw","type":"tally.usage.v1","time":"2026-10-05T11:59:00Z","data":{"account":%q,"service":%q,"calls":%d}}`, id, account, service, calls)
}

// keyring holds the key entries (apikey.Parse's form).
func keyring(t testing.TB, entries ...string) *apikey.Keyring {
	t.Helper()
	var keys []apikey.Key
	for _, e := range entries {
		k, err := apikey.Parse(e)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	ring, err := apikey.NewKeyring(keys, apikey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return ring
}

// newHandler serves with the given key entries (apikey.Parse's form; none: loopback only).
func newHandler(t testing.TB, pub ingest.Publisher, entries ...string) *ingest.Handler {
	t.Helper()
	h, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: 64 << 10, MaxBatch: 50, Keys: keyring(t, entries...), PublishTimeout: 5 * time.Second},
		settle.DefaultCatalogue(), pub, slog.New(slog.NewTextHandler(io.Discard, nil)), ingest.NewMetrics(prometheus.NewRegistry()), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func post(h http.Handler, contentType, body string, header ...string) (int, ingest.Response) {
	req := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(body))
	req.RemoteAddr = "127.0.0.1:5555"
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var resp ingest.Response
	_ = json.Unmarshal(rec.Body.Bytes(), &resp)
	return rec.Code, resp
}

// Against the real Kafka: accepted events are in the topic, keyed by account, with the receive
// time, before the response; rejected ones are not, and the response names them by index.
func TestIngestPublishesToKafka(t *testing.T) {
	brokers, topic := testinfra.Topic(t, 4, nil)
	w, err := producer.NewWriter(producer.DefaultConfig(brokers, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h := newHandler(t, w)

	code, resp := post(h, "application/cloudevents+json", usageJSON("e1", "acme", "image-tagging", 3))
	if code != http.StatusOK || resp.Accepted != 1 {
		t.Fatalf("single: %d %+v", code, resp)
	}
	batch := "[" + strings.Join([]string{
		usageJSON("e2", "acme", "image-tagging", 1),
		usageJSON("e3", "acme", "no-such-service", 1),
		`{"not":"an event"}`,
		usageJSON("e4", "globex", "vehicle-recognition", 7),
		usageJSON("e5", "bad account", "vehicle-recognition", 7),
	}, ",") + "]"
	code, resp = post(h, "application/cloudevents-batch+json", batch)
	if code != http.StatusMultiStatus || resp.Accepted != 2 || len(resp.Rejected) != 3 {
		t.Fatalf("batch: %d %+v", code, resp)
	}
	for i, want := range map[int]string{1: `unknown service "no-such-service"`, 2: "id is missing", 4: "data.account"} {
		found := false
		for _, r := range resp.Rejected {
			if r.Index == i && strings.Contains(r.Reason, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no rejection of index %d with %q in %+v", i, want, resp.Rejected)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := map[string]kafka.Message{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 50 * time.Millisecond})
			defer r.Close()
			if err := r.SetOffset(kafka.FirstOffset); err != nil {
				t.Error(err)
				return
			}
			for {
				rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
				m, err := r.ReadMessage(rctx)
				rcancel()
				if err != nil {
					return
				}
				var ev struct{ ID string }
				_ = json.Unmarshal(m.Value, &ev)
				mu.Lock()
				got[ev.ID] = m
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(got) != 3 || got["e1"].Partition != got["e2"].Partition {
		t.Fatalf("kafka holds %d events (want e1, e2, e4; e1 and e2 in one partition): %v", len(got), got)
	}
	if string(got["e4"].Key) != "globex" || !got["e4"].Time.Equal(clock) || !bytes.Contains(got["e4"].Value, []byte(`"calls":7`)) {
		t.Fatalf("record e4: key %q time %v value %s", got["e4"].Key, got["e4"].Time, got["e4"].Value)
	}
}

// When Kafka does not acknowledge, the gateway gets a 503 telling it to retry.
func TestIngestAnswers503WhenKafkaIsDown(t *testing.T) {
	cfg := producer.DefaultConfig([]string{"127.0.0.1:1"}, "nowhere")
	cfg.WriteTimeout = 200 * time.Millisecond
	w, err := producer.NewWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: 1 << 20, MaxBatch: 10, PublishTimeout: time.Second},
		settle.DefaultCatalogue(), w, slog.New(slog.NewTextHandler(io.Discard, nil)), ingest.NewMetrics(prometheus.NewRegistry()), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	code, resp := post(h, "application/cloudevents+json", usageJSON("e1", "acme", "image-tagging", 3))
	if code != http.StatusServiceUnavailable || !strings.Contains(resp.Error, "retry") {
		t.Fatalf("%d %+v", code, resp)
	}
}

type memPublisher struct {
	mu      sync.Mutex
	records []ingest.Record
}

func (m *memPublisher) Publish(_ context.Context, r []ingest.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records = append(m.records, r...)
	return nil
}

func TestIngestRefusesBadRequests(t *testing.T) {
	pub := &memPublisher{}
	h := newHandler(t, pub)
	one := usageJSON("e1", "acme", "image-tagging", 1)
	many := "[" + strings.TrimSuffix(strings.Repeat(one+",", 51), ",") + "]"
	cases := []struct {
		name, ct, body string
		code           int
		reason         string
	}{
		{"wrong content type", "text/plain", one, http.StatusUnsupportedMediaType, "Content-Type"},
		{"malformed", "application/cloudevents+json", `{"id":`, http.StatusBadRequest, "not a JSON CloudEvent"},
		{"empty", "application/cloudevents+json", ``, http.StatusBadRequest, "empty body"},
		{"batch not an array", "application/cloudevents-batch+json", one, http.StatusBadRequest, "JSON array"},
		{"empty batch", "application/cloudevents-batch+json", `[]`, http.StatusBadRequest, "empty batch"},
		{"batch too long", "application/cloudevents-batch+json", many, http.StatusRequestEntityTooLarge, "at most 50"},
		{"body too large", "application/cloudevents+json", strings.Repeat(" ", 70<<10) + one, http.StatusRequestEntityTooLarge, "larger than"},
		{"wrong type in data", "application/cloudevents+json", strings.Replace(one, `"calls":1`, `"calls":"1"`, 1), http.StatusBadRequest, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, resp := post(h, c.ct, c.body)
			text := resp.Error
			for _, r := range resp.Rejected {
				text += r.Reason
			}
			if code != c.code || !strings.Contains(text, c.reason) || text == "" {
				t.Fatalf("got %d %+v; want %d with %q", code, resp, c.code, c.reason)
			}
		})
	}
	if len(pub.records) != 0 {
		t.Fatalf("bad requests published %d records", len(pub.records))
	}
}

func TestIngestAuthentication(t *testing.T) {
	pub := &memPublisher{}
	keyed := newHandler(t, pub, "gw1=0123456789abcdef-gw1")
	one := usageJSON("e1", "acme", "image-tagging", 1)
	if code, _ := post(keyed, "application/cloudevents+json", one); code != http.StatusUnauthorized {
		t.Fatalf("no key: %d", code)
	}
	if code, _ := post(keyed, "application/cloudevents+json", one, "Authorization", "Bearer 0123456789abcdef-gw2"); code != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", code)
	}
	if code, _ := post(keyed, "application/cloudevents+json", one, "Authorization", "Bearer 0123456789abcdef-gw1"); code != http.StatusOK {
		t.Fatalf("right key: %d", code)
	}
	// Without keys only loopback clients are served.
	open := newHandler(t, pub)
	req := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(one))
	req.RemoteAddr = "10.1.2.3:5555"
	req.Header.Set("Content-Type", "application/cloudevents+json")
	rec := httptest.NewRecorder()
	open.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("remote client without keys: %d", rec.Code)
	}
	if _, err := apikey.Parse("gw=short"); err == nil {
		t.Fatal("a 5-character API key was accepted")
	}
}

// A gateway past its rate gets 429 with Retry-After and nothing it sent is published; another
// gateway's budget is its own.
func TestIngestRateLimitsEachKey(t *testing.T) {
	keys, err := apikey.Load("gw1=0123456789abcdef-gw1;rate=2,gw2=0123456789abcdef-gw2")
	if err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	ring, err := apikey.NewKeyring(keys, apikey.Options{DefaultRate: 1, Now: func() time.Time { return stopped }}) // budgets never refill
	if err != nil {
		t.Fatal(err)
	}
	pub := &memPublisher{}
	reg := prometheus.NewRegistry()
	h, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: 64 << 10, MaxBatch: 50, Keys: ring, PublishTimeout: 5 * time.Second},
		settle.DefaultCatalogue(), pub, slog.New(slog.NewTextHandler(io.Discard, nil)), ingest.NewMetrics(reg), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	send := func(key, id string) (int, ingest.Response) {
		return post(h, "application/cloudevents+json", usageJSON(id, "acme", "image-tagging", 1), "Authorization", "Bearer "+key)
	}
	for _, id := range []string{"a", "b"} {
		if code, resp := send("0123456789abcdef-gw1", id); code != http.StatusOK {
			t.Fatalf("%s, within gw1's rate=2: %d %+v", id, code, resp)
		}
	}
	code, resp := send("0123456789abcdef-gw1", "c")
	if code != http.StatusTooManyRequests || !strings.Contains(resp.Error, `"gw1" has spent its 2 requests a second`) {
		t.Fatalf("the third: %d %+v", code, resp)
	}
	if code, _ := send("0123456789abcdef-gw2", "d"); code != http.StatusOK {
		t.Fatalf("gw2 (the default rate, 1) after gw1 spent its own: %d", code)
	}
	if code, _ := send("0123456789abcdef-gw2", "e"); code != http.StatusTooManyRequests {
		t.Fatalf("gw2's second at rate 1: %d", code)
	}
	if len(pub.records) != 3 {
		t.Fatalf("%d records published; want a, b and d", len(pub.records))
	}
	if got := testinfra.Samples(t, reg)["tally_ingest_requests_failed_total{status=Too Many Requests}"]; got != 2 {
		t.Fatalf("429s counted: %v", testinfra.Samples(t, reg))
	}
}

// FuzzIngestBody: no body crashes the handler; it answers 200, 207, 400 or 413, and publishes
// exactly the events it reports as accepted.
func FuzzIngestBody(f *testing.F) {
	one := usageJSON("e1", "acme", "image-tagging", 1)
	f.Add(one, false)
	f.Add("["+one+","+usageJSON("e2", "x", "y", 0)+"]", true)
	f.Add(`[{"id":1},null,[],"x"]`, true)
	f.Add(`{"specversion":"1.0","id":"a","type":"tally.usage.v1","time":"2026-10-05T11:59:00Z","data":{"account":"a","service":"image-tagging","calls":1e400}}`, false)
	f.Fuzz(func(t *testing.T, body string, batch bool) {
		pub := &memPublisher{}
		h := newHandler(t, pub)
		ct := "application/cloudevents+json"
		if batch {
			ct = "application/cloudevents-batch+json"
		}
		code, resp := post(h, ct, body)
		switch code {
		case http.StatusOK, http.StatusMultiStatus, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d for %q", code, body)
		}
		if resp.Accepted != len(pub.records) {
			t.Fatalf("reported %d accepted, published %d", resp.Accepted, len(pub.records))
		}
	})
}

// failingPublisher fails while down is set, counting calls; block makes each call wait.
type failingPublisher struct {
	down  atomic.Bool
	calls atomic.Int64
	block chan struct{}
}

func (f *failingPublisher) Publish(ctx context.Context, _ []ingest.Record) error {
	f.calls.Add(1)
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.down.Load() {
		return errors.New("kafka: connection refused")
	}
	return nil
}

// While Kafka is down, ingest answers 503 with Retry-After at once instead of waiting on it for
// each request, lets one trial through per interval, and is itself again once a trial succeeds.
func TestIngestShedsLoadWhileKafkaIsDown(t *testing.T) {
	pub := &failingPublisher{}
	pub.down.Store(true)
	h, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: 1 << 20, MaxBatch: 10, PublishTimeout: time.Second, RetryAfter: 200 * time.Millisecond},
		settle.DefaultCatalogue(), pub, slog.New(slog.NewTextHandler(io.Discard, nil)), ingest.NewMetrics(prometheus.NewRegistry()), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	send := func() (int, http.Header) {
		req := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(usageJSON("e1", "acme", "image-tagging", 3)))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		req.RemoteAddr = "127.0.0.1:5000"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Header()
	}
	if code, hdr := send(); code != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "1" {
		t.Fatalf("first request: %d, Retry-After %q", code, hdr.Get("Retry-After"))
	}
	if h.Ready(context.Background()) == nil {
		t.Fatal("ready while Kafka does not acknowledge")
	}
	for range 50 {
		if code, _ := send(); code != http.StatusServiceUnavailable {
			t.Fatalf("answer %d while Kafka is down", code)
		}
	}
	if n := pub.calls.Load(); n != 1 {
		t.Fatalf("%d publishes for 51 requests within the retry interval; want the first only", n)
	}
	time.Sleep(250 * time.Millisecond)
	send() // the trial, still failing
	if n := pub.calls.Load(); n != 2 {
		t.Fatalf("%d publishes after the interval; want one trial", n)
	}
	pub.down.Store(false)
	time.Sleep(250 * time.Millisecond)
	if code, _ := send(); code != http.StatusOK {
		t.Fatalf("trial after Kafka is back: %d", code)
	}
	if code, _ := send(); code != http.StatusOK || h.Ready(context.Background()) != nil {
		t.Fatalf("after recovery: %d, ready %v", code, h.Ready(context.Background()))
	}
}

// Requests beyond MaxInFlight waiting on Kafka are refused at once rather than queued.
func TestIngestCapsRequestsWaitingOnKafka(t *testing.T) {
	pub := &failingPublisher{block: make(chan struct{})}
	h, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: 1 << 20, MaxBatch: 10, PublishTimeout: 10 * time.Second, MaxInFlight: 2},
		settle.DefaultCatalogue(), pub, slog.New(slog.NewTextHandler(io.Discard, nil)), ingest.NewMetrics(prometheus.NewRegistry()), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	codes := make(chan int, 3)
	for range 2 {
		go func() {
			c, _ := post(h, "application/cloudevents+json", usageJSON("e1", "acme", "image-tagging", 3))
			codes <- c
		}()
	}
	for pub.calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	if c, resp := post(h, "application/cloudevents+json", usageJSON("e2", "acme", "image-tagging", 3)); c != http.StatusServiceUnavailable || !strings.Contains(resp.Error, "waiting on the usage log") {
		t.Fatalf("a third request while two wait: %d %+v", c, resp)
	}
	close(pub.block)
	for range 2 {
		if c := <-codes; c != http.StatusOK {
			t.Fatalf("a waiting request got %d", c)
		}
	}
}

// A key reports only the accounts it is scoped to (one gateway must not bill another company),
// only recent usage unless it may back-fill, and may be stored as its SHA-256 alone.
func TestIngestKeysAreScoped(t *testing.T) {
	pub := &memPublisher{}
	secret := "0123456789abcdef-shop"
	sum := sha256.Sum256([]byte(secret))
	h := newHandler(t, pub,
		"shop=sha256:"+hex.EncodeToString(sum[:])+";accounts=acme|shop-*",
		"importer=0123456789abcdef-importer;backfill")
	auth := func(k string) []string { return []string{"Authorization", "Bearer " + k} }
	if code, resp := post(h, "application/cloudevents+json", usageJSON("s1", "shop-42", "image-tagging", 1), auth(secret)...); code != http.StatusOK {
		t.Fatalf("an account under the key's prefix, with the hashed key: %d %+v", code, resp)
	}
	code, resp := post(h, "application/cloudevents+json", usageJSON("s2", "globex", "image-tagging", 900_000), auth(secret)...)
	if code != http.StatusForbidden || len(resp.Rejected) != 1 || !strings.Contains(resp.Rejected[0].Reason, `may not report usage of account "globex"`) {
		t.Fatalf("another company's account: %d %+v", code, resp)
	}
	batch := "[" + usageJSON("s3", "acme", "image-tagging", 1) + "," + usageJSON("s4", "globex", "image-tagging", 1) + "]"
	code, resp = post(h, "application/cloudevents-batch+json", batch, auth(secret)...)
	if code != http.StatusMultiStatus || resp.Accepted != 1 || len(resp.Rejected) != 1 || resp.Rejected[0].Index != 1 {
		t.Fatalf("a batch with one foreign account: %d %+v", code, resp)
	}
	old := strings.Replace(usageJSON("s5", "acme", "image-tagging", 1_000_000), "2026-10-05T11:59:00Z", "2020-01-15T00:00:00Z", 1)
	code, resp = post(h, "application/cloudevents+json", old, auth(secret)...)
	if code != http.StatusForbidden || !strings.Contains(resp.Rejected[0].Reason, "back-dated usage needs a key allowed to back-fill") {
		t.Fatalf("usage back-dated into 2020: %d %+v", code, resp)
	}
	if code, resp := post(h, "application/cloudevents+json", strings.Replace(old, `"s5"`, `"i1"`, 1), auth("0123456789abcdef-importer")...); code != http.StatusOK {
		t.Fatalf("the same by a back-fill key of any account: %d %+v", code, resp)
	}
	if len(pub.records) != 3 {
		t.Fatalf("%d records published; want s1, s3 and i1", len(pub.records))
	}
	for _, bad := range []string{"gw", "gw=", "=0123456789abcdef", "gw=sha256:abc", "gw=0123456789abcdef;accounts=", "gw=0123456789abcdef;accounts=*",
		"gw=0123456789abcdef;accounts=a*b", "gw=0123456789abcdef;admin"} {
		if _, err := apikey.Parse(bad); err == nil {
			t.Errorf("key entry %q was accepted", bad)
		} else if strings.Contains(err.Error(), "0123456789abcdef") {
			t.Errorf("the error for %q shows the key: %v", bad, err)
		}
	}
}

// Bodies as gateways send them: gzip-compressed (bounded once decompressed), a JSON array as
// plain application/json; an unknown encoding is refused with what to send instead.
func TestIngestBodyEncodings(t *testing.T) {
	pub := &memPublisher{}
	h := newHandler(t, pub)
	gz := func(s string) string {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(s))
		_ = zw.Close()
		return b.String()
	}
	batch := "[" + usageJSON("z1", "acme", "image-tagging", 1) + "," + usageJSON("z2", "acme", "image-tagging", 2) + "]"
	if code, resp := post(h, "application/cloudevents-batch+json", gz(batch), "Content-Encoding", "gzip"); code != http.StatusOK || resp.Accepted != 2 {
		t.Fatalf("a gzip batch: %d %+v", code, resp)
	}
	bomb := gz(strings.Repeat(" ", 1<<20) + usageJSON("z3", "acme", "image-tagging", 1)) // ~1 KiB expanding past the 64 KiB limit
	if code, resp := post(h, "application/cloudevents+json", bomb, "Content-Encoding", "gzip"); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a body that expands past the limit: %d %+v", code, resp)
	}
	if code, resp := post(h, "application/cloudevents+json", usageJSON("z4", "acme", "image-tagging", 1), "Content-Encoding", "br"); code != http.StatusUnsupportedMediaType || !strings.Contains(resp.Error, "plain or gzip") {
		t.Fatalf("brotli: %d %+v", code, resp)
	}
	if code, resp := post(h, "application/json", strings.Replace(batch, "z", "j", 2)); code != http.StatusOK || resp.Accepted != 2 {
		t.Fatalf("a JSON array as application/json: %d %+v", code, resp)
	}
	if len(pub.records) != 4 {
		t.Fatalf("%d records; want 4", len(pub.records))
	}
}

// A client that sends headers and then trickles (or stops sending) its body gets 408 once
// BodyTimeout has passed, not a connection held open.
func TestIngestSlowBodyGets408(t *testing.T) {
	h, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: 1 << 20, MaxBatch: 10, PublishTimeout: time.Second, BodyTimeout: 300 * time.Millisecond},
		settle.DefaultCatalogue(), &memPublisher{}, slog.New(slog.NewTextHandler(io.Discard, nil)), ingest.NewMetrics(prometheus.NewRegistry()), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\nContent-Length: 500\r\n\r\n{\"specversion\":")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d; want 408", resp.StatusCode)
	}
}

// A client that goes away while its events wait for Kafka's acknowledgement says nothing about
// Kafka: everyone else is still served, and readiness stays green. (A load generator stopping
// its clients used to trip the breaker and 503 every other gateway.)
func TestAClientGoingAwayDoesNotTripTheBreaker(t *testing.T) {
	pub := &failingPublisher{block: make(chan struct{})}
	h, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: 1 << 20, MaxBatch: 10, PublishTimeout: time.Minute, RetryAfter: time.Minute},
		settle.DefaultCatalogue(), pub, slog.New(slog.NewTextHandler(io.Discard, nil)), ingest.NewMetrics(prometheus.NewRegistry()), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	send := func(ctx context.Context) int {
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/events", strings.NewReader(usageJSON("e1", "acme", "image-tagging", 3)))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		req.RemoteAddr = "127.0.0.1:5000"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	ctx, cancel := context.WithCancel(context.Background())
	answered := make(chan int)
	go func() { answered <- send(ctx) }()
	for pub.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if code := <-answered; code == http.StatusOK {
		t.Fatalf("the abandoned request was answered %d", code)
	}
	if err := h.Ready(context.Background()); err != nil {
		t.Fatalf("not ready after a client went away: %v", err)
	}
	close(pub.block)
	if code := send(context.Background()); code != http.StatusOK {
		t.Fatalf("the next request: %d", code)
	}
}

// Keys are replaced while serving (the role re-reads its key file on SIGHUP): a revoked key is
// refused from the next request on, a new one accepted; a set that would drop every key, or
// has two keys of one name, is refused and the keys held stay.
func TestKeysAreReplacedWhileServing(t *testing.T) {
	ring := keyring(t, "old=old-key-0123456789")
	h, err := ingest.NewHandler(ingest.HandlerConfig{MaxBodyBytes: 64 << 10, MaxBatch: 50, Keys: ring, PublishTimeout: 5 * time.Second},
		settle.DefaultCatalogue(), &memPublisher{}, slog.New(slog.NewTextHandler(io.Discard, nil)), ingest.NewMetrics(prometheus.NewRegistry()), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	send := func(key string) int {
		code, _ := post(h, "application/cloudevents+json", usageJSON("e1", "acme", "image-tagging", 1), "Authorization", "Bearer "+key)
		return code
	}
	if send("old-key-0123456789") != http.StatusOK || send("new-key-0123456789") != http.StatusUnauthorized {
		t.Fatal("before the replacement")
	}
	newKey, _ := apikey.Parse("new=new-key-0123456789")
	if err := ring.Replace([]apikey.Key{newKey}); err != nil {
		t.Fatal(err)
	}
	if send("old-key-0123456789") != http.StatusUnauthorized || send("new-key-0123456789") != http.StatusOK {
		t.Fatal("after the replacement: the old key still works or the new one does not")
	}
	if err := ring.Replace(nil); err == nil {
		t.Fatal("an empty key set replaced the keys (loopback-only by accident)")
	}
	if err := ring.Replace([]apikey.Key{newKey, newKey}); err == nil {
		t.Fatal("two keys of one name were taken")
	}
	if send("new-key-0123456789") != http.StatusOK || ring.Len() != 1 {
		t.Fatal("a refused replacement changed the keys held")
	}
}
