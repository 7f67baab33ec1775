package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/telemetry"
	"github.com/tally-billing/tally/internal/tlsfiles"
	"github.com/tally-billing/tally/settle"
)

// role runs a long-lived subcommand: its admin server (/metrics, /healthz, /readyz) and its
// parts, until the context ends or one part fails; then everything stops within bounded time.
type role struct {
	log      *slog.Logger
	registry *prometheus.Registry
	admin    *telemetry.Admin
	g        *errgroup.Group
	ctx      context.Context
	closers  []func() error
}

// roleFlags are the settings the long-running roles share: Kafka and its topics, logging, the
// billing core, the admin address and, for the roles that use it, ClickHouse.
type roleFlags struct {
	kafka      kafkaFlags
	topics     topicFlags
	clickhouse *clickhouseFlags // nil: the role does not use ClickHouse
	log        logFlags
	billing    func() (settle.Config, error)
	admin      *string
	pprof      *string
	adminTLS   tlsFlags
}

func addRoleFlags(fs *flag.FlagSet, adminAddr string, usesClickHouse bool) roleFlags {
	f := roleFlags{kafka: addKafkaFlags(fs), topics: addTopicFlags(fs)}
	if usesClickHouse {
		cf := addClickHouseFlags(fs)
		f.clickhouse = &cf
	}
	f.log = addLogFlags(fs)
	f.billing = billingFlags(fs)
	f.admin = fs.String("admin-addr", adminAddr, "address of /metrics, /healthz and /readyz (keep it private)")
	f.pprof = fs.String("pprof-addr", "", "address of Go profiles (/debug/pprof/); empty: not served (keep it private)")
	f.adminTLS = addTLSFlags(fs, "admin-", "admin and profiles servers")
	return f
}

// start resolves the shared settings, connects to ClickHouse (nil conn for roles without it) and
// starts the role with readiness checks on its dependencies, Kafka being kc (the command's
// f.kafka.cluster(), resolved once). wait closes the connection.
func (f roleFlags) start(ctx context.Context, env *environment, kc kafkax.Cluster) (*role, settle.Config, driver.Conn, error) {
	log, err := f.log.logger(env)
	if err != nil {
		return nil, settle.Config{}, nil, err
	}
	cfg, err := f.billing()
	if err != nil {
		return nil, settle.Config{}, nil, err
	}
	var conn driver.Conn
	if f.clickhouse != nil {
		if conn, err = f.clickhouse.open(ctx); err != nil {
			return nil, settle.Config{}, nil, err
		}
	}
	certs, err := f.adminTLS.load(ctx, "admin server", log)
	if err != nil {
		return nil, settle.Config{}, nil, err
	}
	r := startRole(ctx, *f.admin, log, certs)
	if *f.pprof != "" {
		profiles := telemetry.NewProfiles(*f.pprof, log)
		if certs != nil {
			profiles.UseTLS(certs.Config())
		}
		r.g.Go(func() error { return profiles.Run(r.ctx) })
	}
	r.needKafka(kc)
	if conn != nil {
		r.needClickHouse(conn)
		r.closers = append(r.closers, conn.Close)
	}
	return r, cfg, conn, nil
}

// startRole starts the admin server on adminAddr, over TLS with certs (nil: plain HTTP).
func startRole(ctx context.Context, adminAddr string, log *slog.Logger, certs *tlsfiles.ServerCerts) *role {
	reg := telemetry.NewRegistry()
	r := &role{log: log, registry: reg, admin: telemetry.NewAdmin(adminAddr, reg, log)}
	if certs != nil {
		r.admin.UseTLS(certs.Config())
	}
	r.g, r.ctx = errgroup.WithContext(ctx)
	r.g.Go(func() error { return r.admin.Run(r.ctx) })
	return r
}

// needKafka and needClickHouse make /readyz check the dependency.
func (r *role) needKafka(kc kafkax.Cluster) {
	r.admin.AddCheck("kafka", func(ctx context.Context) error { return kafkax.Ping(ctx, kc) })
}

func (r *role) needClickHouse(conn driver.Conn) {
	r.admin.AddCheck("clickhouse", func(ctx context.Context) error { return chx.SelectOne(ctx, conn) })
}

// run starts a part that returns when the role's context ends.
func (r *role) run(part func(ctx context.Context) error) { r.g.Go(func() error { return part(r.ctx) }) }

// serveHTTP serves handler on addr, over TLS with certs (nil: plain HTTP) and, when the role
// stops, drains in-flight requests.
func (r *role) serveHTTP(name, addr string, handler http.Handler, drain time.Duration, certs *tlsfiles.ServerCerts) error {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, MaxHeaderBytes: 64 << 10,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen %s: %w", name, addr, err)
	}
	serve := func() error { return srv.Serve(ln) }
	if certs != nil {
		srv.TLSConfig = certs.Config()
		serve = func() error { return srv.ServeTLS(ln, "", "") }
	}
	r.log.Info(name+" listening", "addr", ln.Addr().String(), "tls", certs != nil)
	r.g.Go(func() error {
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	r.g.Go(func() error {
		<-r.ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		r.log.Info(name + " shutting down: draining in-flight requests")
		return srv.Shutdown(shut)
	})
	return nil
}

func (r *role) wait() error {
	err := r.g.Wait()
	for _, c := range r.closers {
		_ = c()
	}
	return err
}

// open connects to ClickHouse as the flags say.
func (c clickhouseFlags) open(ctx context.Context) (driver.Conn, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, err
	}
	return chx.Open(ctx, cfg)
}
