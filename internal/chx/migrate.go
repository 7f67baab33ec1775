package chx

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Why our own migrator rather than golang-migrate or goose: their ClickHouse drivers lock only
// within one process (golang-migrate's is an atomic flag), neither refuses a database migrated by
// a newer binary, and our migrations are a handful of idempotent DDL files embedded in the binary.
// What this one guarantees:
//   - Applied files are recorded with their SHA-256; a file changed after it was applied is
//     refused (migrations are append-only: add a new one).
//   - A database that has a migration this binary does not know is refused (run the newer tally).
//   - One migrator at a time: the lock is a table whose creation is atomic (see lock).
//   - Statements are split by a lexer that knows strings, quoted names and comments.
// Statements must be idempotent (IF NOT EXISTS), so a migration cut short simply runs again.

var migrationName = regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.sql$`)

// identifier is what a database name may be: it is written into DDL, which cannot bind it.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// MigrateOptions tune how Migrate waits for another migrator.
type MigrateOptions struct {
	// LockWait is how long to wait for another migrator's lock before failing (default 2 min).
	LockWait time.Duration
	// StaleAfter is the age after which a lock is taken to belong to a migrator that died, and
	// is taken over (default 10 min; migrations are DDL and take seconds).
	StaleAfter time.Duration
	// Holder names this migrator in the lock (default host:pid).
	Holder string
}

func (o MigrateOptions) withDefaults() MigrateOptions {
	if o.LockWait <= 0 {
		o.LockWait = 2 * time.Minute
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = 10 * time.Minute
	}
	if o.Holder == "" {
		host, _ := os.Hostname()
		o.Holder = host + ":" + strconv.Itoa(os.Getpid())
	}
	return o
}

// migration is one file of the schema.
type migration struct {
	version  uint32
	name     string
	checksum string
	sql      string
}

// Migrate creates cfg.Database if needed and applies, in order, every migration of fsys
// (*/NNNN_name.sql) not yet recorded in its schema_migrations table. It returns the names applied.
func Migrate(ctx context.Context, cfg Config, fsys fs.FS, log *slog.Logger) ([]string, error) {
	return MigrateWith(ctx, cfg, fsys, log, MigrateOptions{})
}

// MigrateWith is Migrate with explicit lock options.
func MigrateWith(ctx context.Context, cfg Config, fsys fs.FS, log *slog.Logger, opts MigrateOptions) ([]string, error) {
	opts = opts.withDefaults()
	if !identifier.MatchString(cfg.Database) {
		return nil, fmt.Errorf("migrate: database name %q must match %s", cfg.Database, identifier)
	}
	files, err := readMigrations(fsys)
	if err != nil {
		return nil, err
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

	release, err := lock(ctx, conn, cfg.Database, opts, log)
	if err != nil {
		return nil, err
	}
	defer release()

	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS schema_migrations
		(version UInt32, name String, applied_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree ORDER BY version`,
		// Added after the first release: rows applied before it have an empty checksum, adopted
		// (recorded from the file) on the next run.
		`ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum String DEFAULT ''`,
	} {
		if err := conn.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("prepare schema_migrations: %w", err)
		}
	}
	recorded, err := appliedMigrations(ctx, conn)
	if err != nil {
		return nil, err
	}
	known := map[uint32]bool{}
	for _, m := range files {
		known[m.version] = true
	}
	for v, r := range recorded {
		if !known[v] {
			return nil, fmt.Errorf("migrate: database %s has migration %s, which this binary does not have: it was migrated by a newer tally; run that version (or newer)",
				cfg.Database, r.name)
		}
	}
	var applied []string
	for _, m := range files {
		if r, ok := recorded[m.version]; ok {
			switch r.checksum {
			case m.checksum:
				continue
			case "":
				if err := record(ctx, conn, m); err != nil {
					return applied, err
				}
				log.Info("clickhouse migration checksum recorded", "database", cfg.Database, "migration", m.name, "sha256", m.checksum)
				continue
			default:
				return applied, fmt.Errorf("migrate: %s changed after it was applied to %s (applied sha256 %s, file sha256 %s): applied migrations are never edited; restore the file and add a new migration",
					m.name, cfg.Database, r.checksum, m.checksum)
			}
		}
		for i, stmt := range SplitStatements(m.sql) {
			if err := conn.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("migration %s statement %d: %w", m.name, i+1, err)
			}
		}
		if err := record(ctx, conn, m); err != nil {
			return applied, err
		}
		log.Info("applied clickhouse migration", "database", cfg.Database, "migration", m.name, "sha256", m.checksum)
		applied = append(applied, m.name)
	}
	return applied, nil
}

func readMigrations(fsys fs.FS) ([]migration, error) {
	paths, err := fs.Glob(fsys, "*/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []migration
	seen := map[uint32]string{}
	for _, p := range paths {
		base := p[strings.LastIndex(p, "/")+1:]
		m := migrationName.FindStringSubmatch(base)
		if m == nil {
			return nil, fmt.Errorf("migration file %s: name must be NNNN_name.sql", p)
		}
		v64, _ := strconv.ParseUint(m[1], 10, 32)
		v := uint32(v64)
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migration files %s and %s have the same number", other, base)
		}
		seen[v] = base
		raw, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(raw)
		out = append(out, migration{version: v, name: base, checksum: hex.EncodeToString(sum[:]), sql: string(raw)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

type appliedMigration struct{ name, checksum string }

func appliedMigrations(ctx context.Context, conn driver.Conn) (map[uint32]appliedMigration, error) {
	// argMax: a row re-recorded with its checksum replaces the one without, merged or not.
	rows, err := conn.Query(ctx, "SELECT version, argMax(name, applied_at), argMax(checksum, applied_at) FROM schema_migrations GROUP BY version")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	out := map[uint32]appliedMigration{}
	for rows.Next() {
		var v uint32
		var r appliedMigration
		if err := rows.Scan(&v, &r.name, &r.checksum); err != nil {
			return nil, err
		}
		out[v] = r
	}
	return out, rows.Err()
}

func record(ctx context.Context, conn driver.Conn, m migration) error {
	if err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
		m.version, m.name, m.checksum, time.Now().UTC()); err != nil {
		return fmt.Errorf("record migration %s: %w", m.name, err)
	}
	return nil
}

const lockTable = "schema_migrations_lock"

// lock makes this the database's only migrator until release is called. The lock is the table
// schema_migrations_lock, its comment naming the holder and when it took it: CREATE TABLE (without
// IF NOT EXISTS) succeeds for one creator only. A lock older than opts.StaleAfter belongs to a
// migrator that died; it is taken over by renaming it to a name derived from its own uuid, which
// fails for every taker but the first, so two takers cannot both win, nor move a fresh lock.
//
// The taker drops the renamed table only when it releases: a second taker that read the stale
// uuid a moment before the rename then finds that name taken and fails its rename, rather than
// renaming the fresh lock away. StaleAfter must exceed the longest migration.
func lock(ctx context.Context, conn driver.Conn, db string, opts MigrateOptions, log *slog.Logger) (release func(), err error) {
	deadline := time.Now().Add(opts.LockWait)
	var takenOver []string
	for attempt := 0; ; attempt++ {
		since := time.Now().UTC()
		comment := opts.Holder + " since " + since.Format(time.RFC3339Nano)
		err := conn.Exec(ctx, "CREATE TABLE "+lockTable+" (x UInt8) ENGINE = Memory COMMENT ?", comment)
		if err == nil {
			return func() {
				// A fresh context: release must happen even when the migration's was cancelled.
				c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := conn.Exec(c, "DROP TABLE IF EXISTS "+lockTable+" SYNC"); err != nil {
					log.Error("migrate: could not release the lock; drop it by hand once no migrator runs",
						"database", db, "table", lockTable, "err", err)
				}
				for _, t := range takenOver {
					_ = conn.Exec(c, "DROP TABLE IF EXISTS "+t+" SYNC")
				}
			}, nil
		}
		if !isCode(err, 57) { // TABLE_ALREADY_EXISTS
			return nil, fmt.Errorf("migrate: take lock %s.%s: %w", db, lockTable, err)
		}
		holder, uuid, created, found, err := lockHolder(ctx, conn, db)
		if err != nil {
			return nil, err
		}
		if found && time.Since(created) > opts.StaleAfter {
			stale := lockTable + "_stale_" + strings.ReplaceAll(uuid, "-", "")
			if err := conn.Exec(ctx, "RENAME TABLE "+lockTable+" TO "+stale); err == nil {
				log.Warn("migrate: took over a stale lock", "database", db, "holder", holder, "age", time.Since(created).Round(time.Second), "renamed_to", stale)
				takenOver = append(takenOver, stale)
			}
			continue
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("migrate: database %s is being migrated by %s (lock %s.%s); waited %s. If no migrator runs, drop the table, or wait %s for it to go stale",
				db, holder, db, lockTable, opts.LockWait, opts.StaleAfter)
		}
		if attempt == 0 {
			log.Info("migrate: waiting for another migrator", "database", db, "holder", holder)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// lockHolder reads the lock's comment and identity; found is false when it has just gone.
func lockHolder(ctx context.Context, conn driver.Conn, db string) (holder, uuid string, created time.Time, found bool, err error) {
	row := conn.QueryRow(ctx, "SELECT comment, toString(uuid) FROM system.tables WHERE database = ? AND name = ?", db, lockTable)
	if err := row.Scan(&holder, &uuid); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return "", "", time.Time{}, false, nil
		}
		return "", "", time.Time{}, false, fmt.Errorf("migrate: read lock %s.%s: %w", db, lockTable, err)
	}
	if i := strings.LastIndex(holder, " since "); i >= 0 {
		created, _ = time.Parse(time.RFC3339Nano, holder[i+len(" since "):])
	}
	return holder, uuid, created, true, nil
}

func isCode(err error, code int32) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && ex.Code == code
}

// SplitStatements splits a migration into statements at semicolons outside string literals,
// quoted identifiers and comments; comments are kept inside a statement and dropped between
// statements, and empty statements are dropped.
func SplitStatements(sql string) []string {
	var out []string
	start := 0
	emit := func(end int) {
		if s := strings.TrimSpace(stripLeadingComments(sql[start:end])); s != "" {
			out = append(out, s)
		}
	}
	for i := 0; i < len(sql); i++ {
		switch c := sql[i]; {
		case c == '\'' || c == '"' || c == '`':
			// A quote ends at its next unescaped twin; '' (doubled) and \' both escape.
			for i++; i < len(sql); i++ {
				if sql[i] == '\\' {
					i++
				} else if sql[i] == c {
					if i+1 < len(sql) && sql[i+1] == c {
						i++
						continue
					}
					break
				}
			}
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-', c == '#' && i+1 < len(sql) && (sql[i+1] == ' ' || sql[i+1] == '!'):
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			if end := strings.Index(sql[i+2:], "*/"); end >= 0 {
				i += 2 + end + 1
			} else {
				i = len(sql)
			}
		case c == ';':
			emit(i)
			start = i + 1
		}
	}
	emit(len(sql))
	return out
}

// stripLeadingComments drops whitespace and comments before a statement's first token, so a file's
// header comment is not sent as (or prefixed to) a statement.
func stripLeadingComments(s string) string {
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		switch {
		case strings.HasPrefix(s, "--"), strings.HasPrefix(s, "# "), strings.HasPrefix(s, "#!"):
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				return ""
			}
			s = s[i+1:]
		case strings.HasPrefix(s, "/*"):
			i := strings.Index(s, "*/")
			if i < 0 {
				return ""
			}
			s = s[i+2:]
		default:
			return s
		}
	}
}
