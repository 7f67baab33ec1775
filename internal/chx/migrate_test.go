package chx_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/testinfra"
)

func TestSplitStatements(t *testing.T) {
	for _, c := range []struct {
		name, sql string
		want      []string
	}{
		{"lines and comments", "-- c\nCREATE TABLE a (x UInt8) -- trailing\nENGINE = Memory;\n\nSELECT 1;\nSELECT 2",
			[]string{"CREATE TABLE a (x UInt8) -- trailing\nENGINE = Memory", "SELECT 1", "SELECT 2"}},
		{"semicolon in a string", "ALTER TABLE t COMMENT COLUMN c 'a; b';SELECT ';'", []string{"ALTER TABLE t COMMENT COLUMN c 'a; b'", "SELECT ';'"}},
		{"escaped quotes", `SELECT 'it''s; fine', 'back\'slash; too'; SELECT 2`, []string{`SELECT 'it''s; fine', 'back\'slash; too'`, "SELECT 2"}},
		{"quoted identifiers", "SELECT 1 AS `a;b`, 2 AS \"c;d\"; SELECT 3", []string{"SELECT 1 AS `a;b`, 2 AS \"c;d\"", "SELECT 3"}},
		{"semicolon in comments", "SELECT 1 -- not; here\n; /* nor; here */ SELECT 2; # nor; this\nSELECT 3",
			[]string{"SELECT 1 -- not; here", "SELECT 2", "SELECT 3"}},
		{"several on a line", "SELECT 1; SELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"only comments", "-- nothing\n/* at all */\n;;", nil},
		{"unterminated string", "SELECT 'a;b", []string{"SELECT 'a;b"}},
	} {
		if got := chx.SplitStatements(c.sql); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %q", c.name, got)
		}
	}
}

// Every statement SplitStatements returns is a piece of the input, and the pieces with the
// semicolons and comments between them are the whole of it: nothing is invented or lost.
func FuzzSplitStatements(f *testing.F) {
	f.Add("SELECT 'a;b'; SELECT 2 -- c;\n")
	f.Add("/* x; */ `a;` \"b;\" 'c\\';'")
	f.Fuzz(func(t *testing.T, sql string) {
		rest := sql
		for _, s := range chx.SplitStatements(sql) {
			if s == "" || s != strings.TrimSpace(s) {
				t.Fatalf("statement %q is empty or untrimmed", s)
			}
			i := strings.Index(rest, s)
			if i < 0 {
				t.Fatalf("statement %q is not in order in %q", s, sql)
			}
			rest = rest[i+len(s):]
		}
	})
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The embedded schema applies to a fresh database, and applying it again changes nothing.
func TestMigrateIsIdempotent(t *testing.T) {
	_, cfg := testinfra.ClickHouse(t, clickhouse.Native)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	applied, err := chx.Migrate(ctx, cfg, chschema.Migrations, discard())
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) == 0 || applied[0] != "0001_usage_events.sql" {
		t.Fatalf("applied %v", applied)
	}
	again, err := chx.Migrate(ctx, cfg, chschema.Migrations, discard())
	if err != nil || len(again) != 0 {
		t.Fatalf("second run applied %v, err %v", again, err)
	}
	if _, err := chx.Migrate(ctx, chx.Config{Addr: cfg.Addr, Username: "default", Database: "bad-name;"}, chschema.Migrations, discard()); err == nil {
		t.Fatal("a database name that is not an identifier was accepted")
	}
}

func TestMigrateRefusesChangedAndUnknownMigrations(t *testing.T) {
	conn, cfg := testinfra.ClickHouse(t, clickhouse.Native)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v1 := fstest.MapFS{"m/0001_a.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = Memory;")}}
	if _, err := chx.Migrate(ctx, cfg, v1, discard()); err != nil {
		t.Fatal(err)
	}
	// A later migration is applied on its own.
	v2 := fstest.MapFS{"m/0001_a.sql": v1["m/0001_a.sql"], "m/0002_b.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS b (s String) ENGINE = Memory COMMENT 'x; y';")}}
	if got, err := chx.Migrate(ctx, cfg, v2, discard()); err != nil || !reflect.DeepEqual(got, []string{"0002_b.sql"}) {
		t.Fatalf("applied %v, err %v", got, err)
	}
	edited := fstest.MapFS{"m/0001_a.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS a (x UInt16) ENGINE = Memory;")}, "m/0002_b.sql": v2["m/0002_b.sql"]}
	if _, err := chx.Migrate(ctx, cfg, edited, discard()); err == nil || !strings.Contains(err.Error(), "0001_a.sql changed after it was applied") {
		t.Fatalf("an edited applied migration: err %v", err)
	}
	if _, err := chx.Migrate(ctx, cfg, v1, discard()); err == nil || !strings.Contains(err.Error(), "0002_b.sql, which this binary does not have") {
		t.Fatalf("a database migrated by a newer binary: err %v", err)
	}
	// A migration recorded before checksums existed is adopted, then held to its file.
	if err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (3, '0003_c.sql', now64(3) - 1)"); err != nil {
		t.Fatal(err)
	}
	v3 := fstest.MapFS{"m/0001_a.sql": v1["m/0001_a.sql"], "m/0002_b.sql": v2["m/0002_b.sql"], "m/0003_c.sql": {Data: []byte("SELECT 1")}}
	if got, err := chx.Migrate(ctx, cfg, v3, discard()); err != nil || len(got) != 0 {
		t.Fatalf("adopting a recorded migration: applied %v, err %v", got, err)
	}
	v3["m/0003_c.sql"] = &fstest.MapFile{Data: []byte("SELECT 2")}
	if _, err := chx.Migrate(ctx, cfg, v3, discard()); err == nil || !strings.Contains(err.Error(), "0003_c.sql changed") {
		t.Fatalf("an adopted migration edited: err %v", err)
	}
	var locks uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name LIKE 'schema_migrations_lock%'", cfg.Database).Scan(&locks); err != nil || locks != 0 {
		t.Fatalf("%d lock tables left after failed runs (err %v)", locks, err)
	}
}

// Migrators started together apply each migration once: the lock lets one in at a time.
func TestConcurrentMigratorsApplyEachMigrationOnce(t *testing.T) {
	conn, cfg := testinfra.ClickHouse(t, clickhouse.Native)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	files := fstest.MapFS{}
	for i := 1; i <= 5; i++ {
		files[fmt.Sprintf("m/%04d_t%d.sql", i, i)] = &fstest.MapFile{Data: []byte(fmt.Sprintf("CREATE TABLE IF NOT EXISTS t%d (x UInt8) ENGINE = Memory;", i))}
	}
	var mu sync.Mutex
	var all []string
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			got, err := chx.Migrate(ctx, cfg, files, discard())
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			all = append(all, got...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(all) != 5 {
		t.Fatalf("applied %v across 4 migrators; want each of the 5 once", all)
	}
	var rows uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM schema_migrations").Scan(&rows); err != nil || rows != 5 {
		t.Fatalf("schema_migrations has %d rows (err %v); want 5", rows, err)
	}
}

func TestMigrateWaitsForTheLockAndTakesOverAStaleOne(t *testing.T) {
	conn, cfg := testinfra.ClickHouse(t, clickhouse.Native)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	files := fstest.MapFS{"m/0001_a.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = Memory;")}}
	if _, err := chx.Migrate(ctx, cfg, files, discard()); err != nil { // creates the database
		t.Fatal(err)
	}
	// A migrator that died holding the lock a minute ago.
	since := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339Nano)
	if err := conn.Exec(ctx, "CREATE TABLE schema_migrations_lock (x UInt8) ENGINE = Memory COMMENT ?", "gone:42 since "+since); err != nil {
		t.Fatal(err)
	}
	files["m/0002_b.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE IF NOT EXISTS b (x UInt8) ENGINE = Memory;")}
	_, err := chx.MigrateWith(ctx, cfg, files, discard(), chx.MigrateOptions{LockWait: time.Second, StaleAfter: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "being migrated by gone:42") {
		t.Fatalf("a held lock: err %v", err)
	}
	got, err := chx.MigrateWith(ctx, cfg, files, discard(), chx.MigrateOptions{LockWait: time.Second, StaleAfter: 30 * time.Second})
	if err != nil || !reflect.DeepEqual(got, []string{"0002_b.sql"}) {
		t.Fatalf("a stale lock: applied %v, err %v", got, err)
	}
	var locks uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name LIKE 'schema_migrations_lock%'", cfg.Database).Scan(&locks); err != nil || locks != 0 {
		t.Fatalf("%d lock tables left (err %v)", locks, err)
	}
}
