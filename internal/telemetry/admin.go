// Package telemetry is the operational surface every role shares: an admin HTTP server with
// /metrics (Prometheus), /healthz (the process runs), /readyz (its dependencies answer) and
// /debug/pprof (Go profiles).
package telemetry

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is a readiness check: nil when the dependency answers.
type Check func(ctx context.Context) error

// NewRegistry is a registry with the Go runtime, process and build (go_build_info: the module
// version each instance runs) collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewBuildInfoCollector())
	return r
}

// Admin serves /metrics, /healthz and /readyz.
type Admin struct {
	paths  string // what it serves, for the log
	addr   string
	log    *slog.Logger
	server *http.Server

	mu      sync.Mutex
	checks  map[string]Check
	lastErr map[string]string
}

// NewAdmin builds the admin server on addr.
func NewAdmin(addr string, reg *prometheus.Registry, log *slog.Logger) *Admin {
	a := &Admin{addr: addr, log: log, checks: map[string]Check{}, lastErr: map[string]string{}}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", a.ready)
	a.server = &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	a.paths = "/metrics /healthz /readyz"
	return a
}

// NewProfiles builds a server of Go profiles (/debug/pprof/) on addr, for measuring before
// optimising. It is separate from the admin server and off unless asked for: profiles reveal
// the program's internals, and pprof's /cmdline would show every flag given, secrets included,
// so it is not served at all.
func NewProfiles(addr string, log *slog.Logger) *Admin {
	a := &Admin{addr: addr, log: log, checks: map[string]Check{}, lastErr: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/debug/pprof/cmdline" {
			http.NotFound(w, r)
			return
		}
		pprof.Index(w, r)
	})
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	a.server = &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	a.paths = "/debug/pprof/"
	return a
}

// AddCheck registers a readiness check under name.
func (a *Admin) AddCheck(name string, c Check) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks[name] = c
}

func (a *Admin) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	a.mu.Lock()
	checks := make(map[string]Check, len(a.checks))
	for k, v := range a.checks {
		checks[k] = v
	}
	a.mu.Unlock()
	status, body := http.StatusOK, ""
	for name, c := range checks {
		if err := c(ctx); err != nil {
			status = http.StatusServiceUnavailable
			body += name + ": " + err.Error() + "\n"
		} else {
			body += name + ": ok\n"
		}
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// UseTLS makes Run serve HTTPS with cfg (from tlsfiles: reloadable, optional client CAs).
func (a *Admin) UseTLS(cfg *tls.Config) { a.server.TLSConfig = cfg }

// Run serves until ctx ends, then shuts down within a few seconds.
func (a *Admin) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		return err
	}
	secure := a.server.TLSConfig != nil
	a.log.Info("admin server listening", "addr", ln.Addr().String(), "paths", a.paths, "tls", secure)
	errc := make(chan error, 1)
	go func() {
		if secure {
			errc <- a.server.ServeTLS(ln, "", "")
			return
		}
		errc <- a.server.Serve(ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.server.Shutdown(shut); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// SetInt sets a gauge to an integer value (a count or a code such as a YYYYMM period).
func SetInt(g prometheus.Gauge, v int64) { g.Set(float64(v)) }

// AddInt adds a count to a counter (Prometheus keeps samples as float64; the counts are integers).
func AddInt(c prometheus.Counter, n int64) { c.Add(float64(n)) }

// StatusWriter remembers the status a handler answered (200 unless it wrote another), for the
// metrics of an API.
type StatusWriter struct {
	http.ResponseWriter
	Status int
}

// NewStatusWriter wraps w.
func NewStatusWriter(w http.ResponseWriter) *StatusWriter {
	return &StatusWriter{ResponseWriter: w, Status: http.StatusOK}
}

// WriteHeader records status and writes it.
func (s *StatusWriter) WriteHeader(status int) {
	s.Status = status
	s.ResponseWriter.WriteHeader(status)
}
