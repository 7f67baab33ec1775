package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// APIKey is a gateway's credential and what it may report. Only the key's SHA-256 is kept: a
// key file can hold hashes alone, so reading it gives no one a key.
type APIKey struct {
	Name string
	Hash [sha256.Size]byte
	// Accounts are the accounts the gateway may report usage of; the zero scope allows any.
	Accounts AccountScope
	// Backfill lets the gateway report usage older than the handler's MaxEventAge.
	Backfill bool
	// Console lets the key change the terms of the accounts in its scope (activations, packs,
	// contract prices) through the accounts API; a gateway's key has no need to.
	Console bool
}

// AccountScope is a set of account ids: exact ids and prefixes (written "acme-*").
type AccountScope struct {
	exact    map[string]bool
	prefixes []string
}

// Any reports whether the scope allows every account.
func (s AccountScope) Any() bool { return len(s.exact) == 0 && len(s.prefixes) == 0 }

// Allows reports whether account is in the scope.
func (s AccountScope) Allows(account string) bool {
	if s.Any() || s.exact[account] {
		return true
	}
	for _, p := range s.prefixes {
		if strings.HasPrefix(account, p) {
			return true
		}
	}
	return false
}

// ParseAccountScope reads ids and prefixes separated by "|": "acme|globex|shop-*".
func ParseAccountScope(spec string) (AccountScope, error) {
	s := AccountScope{exact: map[string]bool{}}
	for _, a := range strings.Split(spec, "|") {
		a = strings.TrimSpace(a)
		switch {
		case a == "":
			return AccountScope{}, fmt.Errorf("accounts %q: an empty entry", spec)
		case strings.HasSuffix(a, "*") && !strings.Contains(a[:len(a)-1], "*"):
			if a == "*" {
				return AccountScope{}, errors.New(`accounts: "*" would allow every account; leave accounts out for that`)
			}
			s.prefixes = append(s.prefixes, a[:len(a)-1])
		case strings.Contains(a, "*"):
			return AccountScope{}, fmt.Errorf("accounts: %q: only a trailing * (a prefix) is supported", a)
		default:
			s.exact[a] = true
		}
	}
	return s, nil
}

// minKeyLen is the shortest plain key accepted: a bearer key is a password nobody types.
const minKeyLen = 16

// ParseAPIKey reads one entry: NAME=KEY or NAME=sha256:HEX (the key's SHA-256, so the secret
// need not be stored at all), then optionally ";accounts=a|b|prefix-*", ";backfill" and
// ";console".
func ParseAPIKey(entry string) (APIKey, error) {
	fields := strings.Split(entry, ";")
	name, secret, ok := strings.Cut(strings.TrimSpace(fields[0]), "=")
	if !ok || name == "" || secret == "" {
		return APIKey{}, fmt.Errorf("%q is not NAME=KEY or NAME=sha256:HEX", redact(fields[0]))
	}
	k := APIKey{Name: name}
	if hexSum, hashed := strings.CutPrefix(secret, "sha256:"); hashed {
		sum, err := hex.DecodeString(hexSum)
		if err != nil || len(sum) != sha256.Size {
			return APIKey{}, fmt.Errorf("key %q: sha256: must be followed by 64 hex digits", name)
		}
		copy(k.Hash[:], sum)
	} else {
		if len(secret) < minKeyLen {
			return APIKey{}, fmt.Errorf("key %q is shorter than %d characters", name, minKeyLen)
		}
		k.Hash = sha256.Sum256([]byte(secret))
	}
	for _, f := range fields[1:] {
		f = strings.TrimSpace(f)
		switch {
		case f == "backfill":
			k.Backfill = true
		case f == "console":
			k.Console = true
		case strings.HasPrefix(f, "accounts="):
			scope, err := ParseAccountScope(strings.TrimPrefix(f, "accounts="))
			if err != nil {
				return APIKey{}, fmt.Errorf("key %q: %w", name, err)
			}
			k.Accounts = scope
		default:
			return APIKey{}, fmt.Errorf("key %q: %q is none of accounts=…, backfill, console", name, f)
		}
	}
	return k, nil
}

// redact keeps a key out of an error message: the name and the first characters only.
func redact(s string) string {
	if name, _, ok := strings.Cut(s, "="); ok {
		return name + "=…"
	}
	if len(s) > 4 {
		return s[:4] + "…"
	}
	return "…"
}
