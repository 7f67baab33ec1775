package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/apikey"
)

// SIGHUP re-reads the key file: a key added to it is held after the signal; a file that no
// longer parses leaves the keys as they were.
func TestSIGHUPReloadsTheKeyFile(t *testing.T) {
	// Caught here too, so a signal that comes before the reloader listens cannot end the test.
	caught := make(chan os.Signal, 16)
	signal.Notify(caught, syscall.SIGHUP)
	defer signal.Stop(caught)

	file := filepath.Join(t.TempDir(), "keys.txt")
	write := func(text string) {
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("gw1=key-one-0123456789\n")
	keys, err := apikey.Load("@" + file)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := apikey.NewKeyring(keys, apikey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reloadKeysOnHUP(ctx, "ingest", "@"+file, ring, slog.New(slog.NewTextHandler(io.Discard, nil)))

	hupUntil := func(what string, done func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !done(); {
			if time.Now().After(deadline) {
				t.Fatalf("SIGHUP: %s never happened", what)
			}
			_ = syscall.Kill(os.Getpid(), syscall.SIGHUP)
			time.Sleep(20 * time.Millisecond)
		}
	}
	write("gw1=key-one-0123456789\n# a second gateway\ngw2=key-two-0123456789;accounts=shop-*\n")
	hupUntil("the reload of two keys", func() bool { return ring.Len() == 2 })

	write("gw1=short\n")
	for range 5 {
		_ = syscall.Kill(os.Getpid(), syscall.SIGHUP)
		time.Sleep(20 * time.Millisecond)
	}
	if ring.Len() != 2 {
		t.Fatalf("a key file that does not parse changed the keys: %d held", ring.Len())
	}
}
