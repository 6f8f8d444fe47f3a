package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// readKey reads a gossip key from a file or ONCEPLANE_GOSSIP_KEY: hex of 16,
// 24 or 32 bytes (never from the command line).
func readKey(file string) ([]byte, error) {
	raw := os.Getenv("ONCEPLANE_GOSSIP_KEY")
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("gossip key file: %w", err)
		}
		raw = string(b)
	}
	raw = strings.TrimSpace(raw)
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
