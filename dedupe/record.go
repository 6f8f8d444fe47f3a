package dedupe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/onceplane/onceplane/event"
)

// Kind is the type of a claim-log record.
type Kind uint8

const (
	// KindClaim claims the first-time IDs of one batch.
	KindClaim Kind = 1
	// KindTakeover starts a new owner's epoch and carries the uncertain set forward.
	KindTakeover Kind = 2
	// KindDone only advances the done watermark (written when a partition goes idle).
	KindDone Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindClaim:
		return "claim"
	case KindTakeover:
		return "takeover"
	case KindDone:
		return "done"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MaxWriter is the longest writer name a record holds, in bytes.
const MaxWriter = 255

// Record is one entry of a partition's claim log.
type Record struct {
	Kind  Kind
	Epoch uint64
	// Writer names the edge that appended the record (at most MaxWriter bytes).
	Writer string
	// Time is when the record was made (millisecond precision); claimed IDs
	// are remembered for the window from this time.
	Time time.Time
	// DoneThrough is a claim-log sequence: every claim at or below it has had
	// its handler finish and its batch acknowledged.
	DoneThrough uint64
	// Through is an ingest stream sequence: every event of the partition at or
	// below it has been decided, handled and acknowledged. A new owner starts
	// consuming after it.
	Through uint64
	// IDs are the claimed hashes (KindClaim) or the carried uncertain set (KindTakeover).
	IDs []event.Hash
	// Seq (claims) is the highest ingest sequence among the claimed events:
	// the batch is applied by a transactional sink once the sink's position
	// reaches it. Zero means unknown.
	Seq uint64
	// Reruns (claims) is how many of IDs, at its start, are uncertain
	// re-runs: an earlier owner may have applied them, so a batch of them
	// the sink did not apply leaves them uncertain, not owed.
	Reruns int
	// Source (takeovers) names the input whose sequences the epoch's claims'
	// Seq count, when its owner's sink keeps positions (see State.Resolve);
	// empty otherwise. At most MaxWriter bytes.
	Source string
	// Owed (takeovers) are IDs claimed by earlier owners that a
	// transactional sink is known not to have applied: they run again as
	// first runs, not flagged.
	Owed []event.Hash
}

const (
	magic0, magic1 = 'O', 'C'
	// version 1 records end with their IDs; version 2 records (written only
	// when Seq, Source or Owed is set, so that a record without them reads
	// in an edge that predates them) carry those after the IDs.
	version1, version2 = 1, 2
	// MaxIDsPerRecord bounds a record's ID count (16 bytes each).
	MaxIDsPerRecord = 1 << 16
)

// recordOverhead bounds a record's bytes besides its IDs, with its headers
// (trace context) in the claim stream.
const recordOverhead = 4 << 10

// MaxBatch is the largest batch an owner may claim at once in a claim stream
// whose messages are at most maxMsg bytes: a takeover record, which carries
// up to two batches' uncertain IDs, must still fit, and so must the ID
// count a record may hold.
func MaxBatch(maxMsg int) int {
	return max(0, min(MaxIDsPerRecord, (maxMsg-recordOverhead)/16)/2)
}

// ErrCorrupt is returned for any record that does not decode.
var ErrCorrupt = errors.New("corrupt claim record")

// ErrForeign (which wraps ErrCorrupt) is returned for bytes that are not a
// claim record at all: they lack the record's magic, so no edge wrote them.
// A claim log can hold such bytes only if something other than an edge
// wrote to it (a JetStream acknowledgement sent there through a publisher's
// reply subject, say). An owner skips a foreign record, counted and
// reported, and never stops on one; a record with the magic that does not
// decode is corrupt, and an owner stops rather than decide on it.
var ErrForeign = fmt.Errorf("%w: foreign bytes (no record magic)", ErrCorrupt)

// Append encodes r onto b.
func (r Record) Append(b []byte) ([]byte, error) {
	if len(r.Writer) > MaxWriter {
		return b, fmt.Errorf("encode record: writer %d bytes > %d", len(r.Writer), MaxWriter)
	}
	if len(r.Source) > MaxWriter {
		return b, fmt.Errorf("encode record: source %d bytes > %d", len(r.Source), MaxWriter)
	}
	if len(r.IDs)+len(r.Owed) > MaxIDsPerRecord {
		return b, fmt.Errorf("encode record: %d ids > %d", len(r.IDs)+len(r.Owed), MaxIDsPerRecord)
	}
	if r.Reruns < 0 || r.Reruns > len(r.IDs) {
		return b, fmt.Errorf("encode record: %d re-runs of %d ids", r.Reruns, len(r.IDs))
	}
	v2 := r.Seq != 0 || r.Reruns != 0 || r.Source != "" || len(r.Owed) > 0
	v := byte(version1)
	if v2 {
		v = version2
	}
	b = append(b, magic0, magic1, v, byte(r.Kind))
	b = binary.AppendUvarint(b, r.Epoch)
	b = append(b, byte(len(r.Writer)))
	b = append(b, r.Writer...)
	b = binary.AppendVarint(b, r.Time.UnixMilli())
	b = binary.AppendUvarint(b, r.DoneThrough)
	b = binary.AppendUvarint(b, r.Through)
	b = binary.AppendUvarint(b, uint64(len(r.IDs)))
	b = appendHashes(b, r.IDs)
	if v2 {
		b = binary.AppendUvarint(b, r.Seq)
		b = binary.AppendUvarint(b, uint64(r.Reruns))
		b = append(b, byte(len(r.Source)))
		b = append(b, r.Source...)
		b = binary.AppendUvarint(b, uint64(len(r.Owed)))
		b = appendHashes(b, r.Owed)
	}
	return b, nil
}

func appendHashes(b []byte, hs []event.Hash) []byte {
	for _, h := range hs {
		b = binary.LittleEndian.AppendUint64(b, h.Hi)
		b = binary.LittleEndian.AppendUint64(b, h.Lo)
	}
	return b
}

// readHashes reads a count and that many hashes off b; at most limit.
func readHashes(b []byte, limit uint64) ([]event.Hash, []byte, bool) {
	count, n := binary.Uvarint(b)
	if n <= 0 || count > limit || uint64(len(b)-n) < count*16 {
		return nil, b, false
	}
	b = b[n:]
	var hs []event.Hash
	if count > 0 {
		hs = make([]event.Hash, count)
		for i := range hs {
			hs[i] = event.Hash{Hi: binary.LittleEndian.Uint64(b[16*i:]), Lo: binary.LittleEndian.Uint64(b[16*i+8:])}
		}
	}
	return hs, b[16*count:], true
}

// Decode parses one record. Any malformed input returns an error wrapping ErrCorrupt.
func Decode(b []byte) (Record, error) {
	var r Record
	fail := func(what string) (Record, error) { return Record{}, fmt.Errorf("%w: %s", ErrCorrupt, what) }
	if len(b) < 2 || b[0] != magic0 || b[1] != magic1 {
		return Record{}, ErrForeign
	}
	if len(b) < 4 {
		return fail("short")
	}
	v := b[2]
	if v != version1 && v != version2 {
		return fail(fmt.Sprintf("version %d", v))
	}
	r.Kind = Kind(b[3])
	if r.Kind < KindClaim || r.Kind > KindDone {
		return fail("unknown kind")
	}
	b = b[4:]
	var n int
	if r.Epoch, n = binary.Uvarint(b); n <= 0 {
		return fail("epoch")
	}
	b = b[n:]
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return fail("writer")
	}
	r.Writer, b = string(b[1:1+int(b[0])]), b[1+int(b[0]):]
	ms, n := binary.Varint(b)
	if n <= 0 {
		return fail("time")
	}
	r.Time, b = time.UnixMilli(ms), b[n:]
	if r.DoneThrough, n = binary.Uvarint(b); n <= 0 {
		return fail("done")
	}
	b = b[n:]
	if r.Through, n = binary.Uvarint(b); n <= 0 {
		return fail("through")
	}
	b = b[n:]
	var ok bool
	if r.IDs, b, ok = readHashes(b, MaxIDsPerRecord); !ok {
		return fail("ids")
	}
	if v == version2 {
		if r.Seq, n = binary.Uvarint(b); n <= 0 {
			return fail("seq")
		}
		b = b[n:]
		reruns, n := binary.Uvarint(b)
		if n <= 0 || reruns > uint64(len(r.IDs)) {
			return fail("re-runs")
		}
		r.Reruns, b = int(reruns), b[n:]
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return fail("source")
		}
		r.Source, b = string(b[1:1+int(b[0])]), b[1+int(b[0]):]
		if r.Owed, b, ok = readHashes(b, MaxIDsPerRecord-uint64(len(r.IDs))); !ok {
			return fail("owed")
		}
	}
	if len(b) != 0 {
		return fail(fmt.Sprintf("%d bytes after the record", len(b)))
	}
	return r, nil
}

// CarryWriter is the writer of the records a failback carries over.
const CarryWriter = "failback"

// Carry returns the records a failback appends to the failover's log of a
// partition so that what the region claimed in its superseded records (the
// tail of its own log that never reached its standby before it was lost)
// stays claimed: one claim record per superseded claim, with its IDs and
// time, in the failover's epoch (last's), marking nothing done and moving
// no watermark. The region's next owner finds them pending and carries
// them as uncertain, so an event among them that arrives again is re-run
// flagged, never handled as new. Takeover and done records carry nothing.
func Carry(superseded []Record, last Record) []Record {
	var out []Record
	for _, r := range superseded {
		if r.Kind != KindClaim || len(r.IDs) == 0 {
			continue
		}
		out = append(out, Record{Kind: KindClaim, Epoch: last.Epoch, Writer: CarryWriter, Time: r.Time, IDs: r.IDs})
	}
	return out
}
