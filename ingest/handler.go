// Package ingest is the HTTP edge of the pipeline (SPEC §4): it authenticates gateways, validates
// usage events with the contract package and publishes the accepted ones to Kafka through a
// Publisher; ingest/producer is the gateway-side client and ingest/sink moves the topic into
// ClickHouse.
package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/apikey"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/jsonscan"
	"github.com/tally-billing/tally/internal/problem"
	"github.com/tally-billing/tally/internal/telemetry"
)

// Record is an accepted usage event on its way to the log: Key is the account (per-account
// ordering), Value the event exactly as the gateway sent it, Time when it was received.
type Record struct {
	Key, Value []byte
	Time       time.Time
}

// Publisher makes records durable in the usage log. Publish returns only when every record is
// acknowledged by all in-sync replicas, or with an error (some may then be durable: the gateway
// retries, and the event id makes the retry harmless).
type Publisher interface {
	Publish(ctx context.Context, records []Record) error
}

// HandlerConfig configures the HTTP ingest API.
type HandlerConfig struct {
	// MaxBodyBytes bounds a request body; MaxBatch the events of one batch.
	MaxBodyBytes int64
	MaxBatch     int
	// Keys are the gateways' bearer keys and what each may report (shared with the accounts
	// API, replaceable while serving). Nil or none: only loopback clients may send, for any
	// account.
	Keys *apikey.Keyring
	// MaxEventAge is how far before the receiving clock a call may have happened, unless the
	// key may back-fill: older usage would re-price months long settled (default 35 days, the
	// usage topic's retention; negative: no limit).
	MaxEventAge time.Duration
	// PublishTimeout bounds the wait for Kafka's acknowledgement.
	PublishTimeout time.Duration
	// MaxInFlight bounds the requests waiting on Kafka at once; more are answered 503 at once
	// (default 1024).
	MaxInFlight int
	// BodyTimeout bounds the wait for a request's body: 408 after it (0: none).
	BodyTimeout time.Duration
	// RetryAfter is how long a 503 asks the gateway to wait, and how long after a failed publish
	// requests are refused without trying Kafka, until one trial goes through (default 1 s).
	RetryAfter time.Duration
}

// Validate reports every problem at once.
func (c HandlerConfig) Validate() error {
	var errs []error
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, errors.New("ingest: max body bytes must be positive"))
	}
	if c.MaxBatch <= 0 {
		errs = append(errs, errors.New("ingest: max batch must be positive"))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, errors.New("ingest: publish timeout must be positive"))
	}
	if c.MaxInFlight < 0 {
		errs = append(errs, errors.New("ingest: max in-flight requests must not be negative (0: the default)"))
	}
	if c.RetryAfter < 0 {
		errs = append(errs, errors.New("ingest: retry-after must not be negative (0: the default)"))
	}
	return errors.Join(errs...)
}

// Handler serves POST /v1/events: one CloudEvent (application/cloudevents+json) or a batch
// (application/cloudevents-batch+json, a JSON array). Every event is validated; accepted ones are
// published, and the response, sent only after Kafka acknowledged them, reports every rejected
// event by index with its reason.
type Handler struct {
	cfg      HandlerConfig
	services contract.ServiceChecker
	pub      Publisher
	log      *slog.Logger
	metrics  *Metrics
	now      func() time.Time
	inFlight chan struct{}
	breaker  *breaker
}

// NewHandler builds the ingest API. now is the receiving clock.
func NewHandler(cfg HandlerConfig, services contract.ServiceChecker, pub Publisher, log *slog.Logger, metrics *Metrics, now func() time.Time) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = time.Second
	}
	h := &Handler{cfg: cfg, services: services, pub: pub, log: log, metrics: metrics, now: now,
		inFlight: make(chan struct{}, cfg.MaxInFlight), breaker: &breaker{retryAfter: cfg.RetryAfter, now: time.Now}} // real time: operations, not billing
	if cfg.MaxEventAge == 0 {
		h.cfg.MaxEventAge = 35 * 24 * time.Hour
	}
	return h, nil
}

// Response is the body of every answer of POST /v1/events.
type Response struct {
	Accepted int         `json:"accepted"`
	Rejected []Rejection `json:"rejected"`
	Error    string      `json:"error,omitempty"`
}

// Rejection names a refused event by its index in the request (0 for a single event).
type Rejection struct {
	Index  int    `json:"index"`
	ID     string `json:"id,omitempty"`
	Reason string `json:"reason"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	key, refused := h.cfg.Keys.Admit(r)
	if refused != nil {
		refused.SetHeaders(w.Header())
		h.fail(w, refused.Status, refused.Detail)
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mt = ""
	}
	batch, binary := false, cloudevent.IsBinary(r.Header)
	switch {
	case binary: // attributes in ce-* headers, the data as the body (the SDKs' default)
	case mt == cloudevent.ContentType, mt == "application/json":
	case mt == cloudevent.BatchContentType:
		batch = true
	default:
		h.fail(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: send %s (one event), %s (a JSON array), or a binary-mode event (ce-* headers)",
			r.Header.Get("Content-Type"), cloudevent.ContentType, cloudevent.BatchContentType))
		return
	}
	body, status, err := h.readBody(w, r)
	if err != nil {
		h.fail(w, status, err.Error())
		return
	}
	if mt == "application/json" && !binary && bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")) {
		batch = true // a JSON array sent as plain JSON is the batch it evidently is
	}
	var raws [][]byte
	if binary {
		raw, err := cloudevent.FromBinary(r.Header, body)
		if err != nil {
			h.metrics.rejected(err)
			h.metrics.Failed.WithLabelValues(http.StatusText(http.StatusBadRequest)).Inc()
			writeJSON(w, http.StatusBadRequest, Response{Rejected: []Rejection{{Index: 0, ID: r.Header.Get("Ce-Id"), Reason: err.Error()}}})
			return
		}
		raws = [][]byte{raw}
	} else if raws, err = SplitBody(body, batch, h.cfg.MaxBatch); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, errBatchTooLong) {
			status = http.StatusRequestEntityTooLarge
		}
		h.fail(w, status, err.Error())
		return
	}
	received := h.now().Truncate(time.Millisecond) // Kafka keeps milliseconds: validate against what the log will say
	resp := Response{Rejected: []Rejection{}}
	records := make([]Record, 0, len(raws))
	forbidden := 0
	for i, raw := range raws {
		u, err := contract.DecodeUsage(raw, received, h.services)
		if err == nil {
			if err = h.allowed(key, u, received); err != nil {
				forbidden++
			}
		}
		if err != nil {
			resp.Rejected = append(resp.Rejected, Rejection{Index: i, ID: u.ID, Reason: err.Error()})
			h.metrics.rejected(err)
			continue
		}
		records = append(records, Record{Key: []byte(u.Account), Value: raw, Time: received})
	}
	if !batch && forbidden == 1 {
		h.metrics.Failed.WithLabelValues(http.StatusText(http.StatusForbidden)).Inc()
		writeJSON(w, http.StatusForbidden, resp)
		return
	}
	if len(records) > 0 {
		if ok, reason := h.publish(r, key.Name, records); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(h.cfg.RetryAfter.Round(time.Second)/time.Second))))
			h.fail(w, http.StatusServiceUnavailable, reason)
			return
		}
		resp.Accepted = len(records)
		telemetry.AddInt(h.metrics.Accepted, int64(len(records)))
	}
	h.metrics.BatchSize.Observe(float64(len(raws)))
	status = http.StatusOK
	switch {
	case resp.Accepted == 0:
		status = http.StatusBadRequest
	case len(resp.Rejected) > 0:
		status = http.StatusMultiStatus
	}
	h.metrics.RequestSeconds.Observe(time.Since(start).Seconds())
	writeJSON(w, status, resp)
}

var errBatchTooLong = errors.New("batch too long")

// publish makes the records durable, or says why not (the answer is then 503).
func (h *Handler) publish(r *http.Request, gateway string, records []Record) (bool, string) {
	select {
	case h.inFlight <- struct{}{}:
		defer func() { <-h.inFlight }()
	default:
		h.metrics.Shed.WithLabelValues("in_flight").Inc()
		return false, fmt.Sprintf("%d requests are waiting on the usage log already; retry the request later (event ids make retries safe)", h.cfg.MaxInFlight)
	}
	ok, trial := h.breaker.allow()
	if !ok {
		h.metrics.Shed.WithLabelValues("kafka_down").Inc()
		return false, "the usage log is not acknowledging writes; retry the request later (event ids make retries safe)"
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.PublishTimeout)
	pubStart := time.Now()
	err := h.pub.Publish(ctx, records)
	cancel()
	h.metrics.ProduceSeconds.Observe(time.Since(pubStart).Seconds())
	if err != nil && r.Context().Err() != nil {
		// The client went away (it gave up, or a load balancer did): that says nothing about
		// Kafka, so the breaker stays as it was; the client's retry is safe, ids make it so.
		h.breaker.abandon(trial)
		h.metrics.Abandoned.Inc()
		return false, "the request was canceled before the usage log acknowledged its events; retry it"
	}
	opened, closed, refused := h.breaker.done(err, trial)
	switch {
	case opened:
		h.log.Error("ingest: publishing to kafka failed; refusing requests with 503 until a trial publish succeeds",
			"gateway", gateway, "events", len(records), "retry_after", h.cfg.RetryAfter, "err", err)
	case closed:
		h.log.Info("ingest: kafka acknowledges writes again", "requests_refused_meanwhile", refused)
	}
	if err != nil {
		h.metrics.PublishFailures.Inc()
		return false, "the usage log did not acknowledge the events; retry the request (event ids make retries safe)"
	}
	return true, ""
}

// Ready fails while Kafka does not acknowledge writes (the breaker is open); a readiness check.
func (h *Handler) Ready(context.Context) error { return h.breaker.ready() }

// readBody reads the request body, gzip-compressed (Content-Encoding: gzip) or not, within
// MaxBodyBytes once decompressed (a small bomb cannot expand past it) and within BodyTimeout (a
// client trickling bytes gets 408, not a hung connection).
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	if h.cfg.BodyTimeout > 0 {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.cfg.BodyTimeout))
	}
	var in io.Reader = http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(in)
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("Content-Encoding gzip: the body is not gzip: %v", err)
		}
		defer zr.Close()
		in = io.LimitReader(zr, h.cfg.MaxBodyBytes+1)
	default:
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("Content-Encoding %q: send the body plain or gzip", enc)
	}
	body, err := io.ReadAll(in)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig) || int64(len(body)) > h.cfg.MaxBodyBytes:
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body larger than %d bytes: send smaller batches", h.cfg.MaxBodyBytes)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, http.StatusRequestTimeout, fmt.Errorf("the body did not arrive within %s", h.cfg.BodyTimeout)
	case err != nil:
		return nil, http.StatusBadRequest, fmt.Errorf("reading body: %v", err)
	}
	return body, 0, nil
}

// SplitBody turns a request body into the raw events it carries: the body itself, or the
// elements of a JSON array for a batch.
func SplitBody(body []byte, batch bool, maxBatch int) ([][]byte, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errors.New("empty body: send a CloudEvent")
	}
	if !batch {
		return [][]byte{body}, nil
	}
	if body[0] != '[' {
		return nil, errors.New("a batch must be a JSON array of CloudEvents")
	}
	raws, ok := jsonscan.SplitArray(body)
	if !ok { // encoding/json judges what the scanner does not take, and says why
		var elems []json.RawMessage
		if err := json.Unmarshal(body, &elems); err != nil {
			return nil, fmt.Errorf("batch is not a JSON array: %v", err)
		}
		raws = make([][]byte, len(elems))
		for i := range elems {
			raws[i] = elems[i]
		}
	}
	if len(raws) == 0 {
		return nil, errors.New("empty batch")
	}
	if len(raws) > maxBatch {
		return nil, fmt.Errorf("%w: %d events, at most %d per request", errBatchTooLong, len(raws), maxBatch)
	}
	return raws, nil
}

// allowed checks what the key may report: the account must be in its scope (one gateway must not
// bill another company), and the call no older than MaxEventAge unless the key may back-fill
// (old usage would re-price months long settled).
func (h *Handler) allowed(key *apikey.Key, u contract.Usage, received time.Time) error {
	if !key.Accounts.Allows(u.Account) {
		return cloudevent.Invalid("forbidden", "the key %q may not report usage of account %q", key.Name, u.Account)
	}
	if h.cfg.MaxEventAge > 0 && !key.Backfill && u.Time.Before(received.Add(-h.cfg.MaxEventAge)) {
		return cloudevent.Invalid("time", "time %s is more than %s before the receiving clock: back-dated usage needs a key allowed to back-fill",
			u.Time.Format(time.RFC3339), h.cfg.MaxEventAge)
	}
	return nil
}

// fail refuses the whole request: RFC 9457 problem details, with the members of a Response
// beside them (accepted 0, rejected [], error the reason), so a client reading either finds it.
func (h *Handler) fail(w http.ResponseWriter, status int, reason string) {
	h.metrics.Failed.WithLabelValues(http.StatusText(status)).Inc()
	w.Header().Set("Content-Type", problem.ContentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(refusal{Details: problem.Details{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: reason},
		Response: Response{Rejected: []Rejection{}, Error: reason}})
}

// refusal is the body of a request refused whole.
type refusal struct {
	problem.Details
	Response
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
