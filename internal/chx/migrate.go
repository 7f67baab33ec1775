package chx

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

var migrationName = regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.sql$`)

// identifier is what a database name may be: it is written into DDL, which cannot bind it.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// Migrate creates cfg.Database if needed and applies, in order, every migration of fsys
// (NNNN_name.sql) not yet recorded in its schema_migrations table. Statements must be idempotent,
// so a migration interrupted before it was recorded can simply run again.
func Migrate(ctx context.Context, cfg Config, fsys fs.FS, log *slog.Logger) ([]string, error) {
	if !identifier.MatchString(cfg.Database) {
		return nil, fmt.Errorf("migrate: database name %q must match %s", cfg.Database, identifier)
	}
	admin := cfg
	admin.Database = ""
	conn, err := Open(ctx, admin)
	if err != nil {
		return nil, err
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+cfg.Database); err != nil {
		conn.Close()
		return nil, fmt.Errorf("create database %s: %w", cfg.Database, err)
	}
	conn.Close()
	if conn, err = Open(ctx, cfg); err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations
		(version UInt32, name String, applied_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree ORDER BY version`); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", err)
	}
	done := map[uint32]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, err
		}
		done[v] = true
	}
	rows.Close()

	files, err := fs.Glob(fsys, "*/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var applied []string
	for _, f := range files {
		base := f[strings.LastIndex(f, "/")+1:]
		m := migrationName.FindStringSubmatch(base)
		if m == nil {
			return applied, fmt.Errorf("migration file %s: name must be NNNN_name.sql", f)
		}
		v64, _ := strconv.ParseUint(m[1], 10, 32)
		v := uint32(v64)
		if done[v] {
			continue
		}
		raw, err := fs.ReadFile(fsys, f)
		if err != nil {
			return applied, err
		}
		for i, stmt := range SplitStatements(string(raw)) {
			if err := conn.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("migration %s statement %d: %w", base, i+1, err)
			}
		}
		if err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)", v, base, time.Now().UTC()); err != nil {
			return applied, fmt.Errorf("record migration %s: %w", base, err)
		}
		log.Info("applied clickhouse migration", "database", cfg.Database, "migration", base)
		applied = append(applied, base)
	}
	return applied, nil
}

// SplitStatements splits a migration into statements at semicolons ending a line, dropping
// comment-only lines.
func SplitStatements(sql string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "--") || t == "" {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			if s := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"); s != "" {
				out = append(out, s)
			}
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}
