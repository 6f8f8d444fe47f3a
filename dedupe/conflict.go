package dedupe

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ConflictRecord is the conflicts stream's record of one ID claimed in two
// regions. Each region that detects it writes one (on its own conflicts
// stream, once per race); together they give both sides.
type ConflictRecord struct {
	Hash       string    `json:"id_hash"`
	Partition  int       `json:"partition"`
	Region     string    `json:"region"` // the detecting region, whose claim log holds the ID
	Edge       string    `json:"edge"`
	DetectedAt time.Time `json:"detected_at"`
	ClaimGen   uint16    `json:"claim_gen"` // the local claim's generation: which race of the ID
	Remote     struct {
		Region string    `json:"region"`
		Writer string    `json:"writer,omitempty"`
		Epoch  uint64    `json:"epoch,omitempty"`
		Time   time.Time `json:"time,omitzero"`
		Seq    uint64    `json:"xclaims_seq,omitempty"`
	} `json:"remote"`
}

// ErrForeignConflict is returned for bytes on a conflict subject that are
// not a conflict record (a JetStream acknowledgement is JSON too: the
// fields a record must have tell them apart).
var ErrForeignConflict = errors.New("not a conflict record")

// DecodeConflict decodes a conflicts stream record.
func DecodeConflict(b []byte) (ConflictRecord, error) {
	var r ConflictRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %w", ErrForeignConflict, err)
	}
	if len(r.Hash) != 32 || strings.Trim(r.Hash, "0123456789abcdef") != "" || r.Region == "" || r.Remote.Region == "" {
		return ConflictRecord{}, fmt.Errorf("%w: no ID hash or regions", ErrForeignConflict)
	}
	return r, nil
}
