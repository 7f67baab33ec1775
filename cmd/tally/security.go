package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tally-billing/tally/internal/apikey"
	"github.com/tally-billing/tally/internal/tlsfiles"
)

// keyFlags are an API role's keys and rate limit: --api-keys and --rate-limit on ingest,
// --query-keys and --query-rate-limit on aggregate (distinct names, so `tally run` can give
// the two APIs distinct key files through TALLY_* variables).
type keyFlags struct {
	name string
	spec *string
	rate *float64
}

func addKeyFlags(fs *flag.FlagSet, keysFlag, rateFlag, who string) keyFlags {
	return keyFlags{
		name: keysFlag,
		spec: fs.String(keysFlag, "", who+" keys: @FILE with one entry per line (keep keys off the command line), or entries separated by commas; "+
			"an entry is NAME=KEY or NAME=sha256:HEX, then optionally ;accounts=a|b|prefix-*, ;backfill, ;console and ;rate=N; empty: loopback clients only"),
		rate: fs.Float64(rateFlag, 0, "requests a second each key may make (bursts of as many; a key's ;rate=N overrides it), 429 beyond; 0: no limit"),
	}
}

// ring builds the keyring; with @FILE, SIGHUP re-reads the file until ctx ends.
func (f keyFlags) ring(ctx context.Context, role string, log *slog.Logger) (*apikey.Keyring, error) {
	keys, err := apikey.Load(*f.spec)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", f.name, err)
	}
	ring, err := apikey.NewKeyring(keys, apikey.Options{DefaultRate: *f.rate})
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", f.name, err)
	}
	if strings.HasPrefix(*f.spec, "@") {
		go reloadKeysOnHUP(ctx, role, *f.spec, ring, log)
	}
	if len(keys) == 0 {
		log.Warn(role+": no keys: only loopback clients are let in, and for any account", "flag", "--"+f.name)
	}
	return ring, nil
}

// reloadKeysOnHUP re-reads the key file on each SIGHUP until ctx ends: a key is added or revoked
// without dropping a connection. A file that does not parse, or would leave no key, is refused
// and the keys held stay (logged as an error).
func reloadKeysOnHUP(ctx context.Context, role, spec string, ring *apikey.Keyring, log *slog.Logger) {
	onHUP(ctx, func() {
		file := strings.TrimPrefix(spec, "@")
		if err := reloadKeys(spec, ring); err != nil {
			log.Error(role+": API keys not reloaded; the keys held before stay in force", "file", file, "err", err)
			return
		}
		log.Info(role+": API keys reloaded", "file", file, "keys", ring.Len())
	})
}

func reloadKeys(spec string, ring *apikey.Keyring) error {
	keys, err := apikey.Load(spec)
	if err != nil {
		return err
	}
	return ring.Replace(keys)
}

// onHUP calls reload on each SIGHUP until ctx ends.
func onHUP(ctx context.Context, reload func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			reload()
		}
	}
}

// tlsFlags are a server's certificate files: --tls-cert, --tls-key, --tls-client-ca for an API,
// the same with the prefix admin- for the admin and profiles servers.
type tlsFlags struct{ prefix, cert, key, clientCA *string }

func addTLSFlags(fs *flag.FlagSet, prefix, server string) tlsFlags {
	return tlsFlags{
		prefix: &prefix,
		cert:   fs.String(prefix+"tls-cert", "", "PEM certificate chain of the "+server+" (with --"+prefix+"tls-key: HTTPS; SIGHUP re-reads both)"),
		key:    fs.String(prefix+"tls-key", "", "PEM private key of --"+prefix+"tls-cert"),
		clientCA: fs.String(prefix+"tls-client-ca", "", "PEM CAs whose client certificates the "+server+
			" requires (mutual TLS; a client without one is refused in the handshake); empty: none asked"),
	}
}

// load reads the files (nil: plain HTTP); with them, SIGHUP re-reads them until ctx ends.
func (f tlsFlags) load(ctx context.Context, server string, log *slog.Logger) (*tlsfiles.ServerCerts, error) {
	files := tlsfiles.Server{CertFile: *f.cert, KeyFile: *f.key, ClientCAFile: *f.clientCA}
	if !files.Enabled() {
		return nil, nil
	}
	certs, err := files.Load()
	if err != nil {
		return nil, fmt.Errorf("--%[1]stls-cert/--%[1]stls-key/--%[1]stls-client-ca: %[2]w", *f.prefix, err)
	}
	go onHUP(ctx, func() {
		if err := certs.Reload(); err != nil {
			log.Error(server+": TLS certificate not reloaded; the one held stays in use", "err", err)
			return
		}
		log.Info(server+": TLS certificate reloaded", "cert", *f.cert)
	})
	return certs, nil
}
