package main

import (
	"encoding/hex"
	"fmt"

	"github.com/onceplane/onceplane/internal/cli"
)

// readKey reads a gossip key from a file or ONCEPLANE_GOSSIP_KEY: hex of 16,
// 24 or 32 bytes (never from the command line).
func readKey(file string) ([]byte, error) {
	raw, err := cli.Secret(file, "ONCEPLANE_GOSSIP_KEY")
	if err != nil {
		return nil, fmt.Errorf("gossip key: %w", err)
	}
	if raw == "" {
		return nil, nil
	}
	k, err := hex.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("gossip key: want hex: %w", err)
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("gossip key: %d bytes, want 16, 24 or 32", len(k))
}
