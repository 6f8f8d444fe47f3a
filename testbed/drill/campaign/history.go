package campaign

import "time"

// Kind says what a publish was meant to be.
type Kind string

// Publish kinds.
const (
	// KindUnique is a new valid ID from the background producer.
	KindUnique Kind = "unique"
	// KindResend re-sends an acked ID with the same payload.
	KindResend Kind = "resend"
	// KindResendDiff re-sends an acked ID with a different payload.
	KindResendDiff Kind = "resend-diff"
	// KindHostileValid is a hostile producer's event that must still be
	// handled (a valid ID with control headers, a payload at the limit).
	KindHostileValid Kind = "hostile-valid"
	// KindProbe is one event per partition published once the faults
	// stopped: every partition must still handle new events.
	KindProbe Kind = "probe"
	// KindRace is an ID sent to two regions at once (three regions): it
	// must be handled in at least one, and if in both, be a conflict.
	KindRace Kind = "race"
	// KindInvalid is an event that must be dead-lettered (no ID, an ID too
	// long or with a bad byte, a misrouted ID, a payload over the limit).
	KindInvalid Kind = "invalid"
)

// Publish is one acknowledged publish.
type Publish struct {
	// ID is the Nats-Msg-Id header as sent ("" when absent).
	ID string
	// Token is the subject's last token (the server partitions by it).
	Token string
	// Digest is the payload's FNV-64a digest.
	Digest uint64
	// Seq is the ingest stream sequence in the ack; Duplicate is the ack's
	// flag (the ingest Nats-Msg-Id window dropped it; Seq is the original's).
	Seq       uint64
	Duplicate bool
	Kind      Kind
	// Hostile names the hostile variant ("" for the background producer).
	Hostile string
	// DeadLetter is true when the event must be dead-lettered, not handled.
	DeadLetter bool
	// At is when the ack arrived, from the campaign's start.
	At time.Duration
}

// HandlerRun is one handler run, as an edge's ledger recorded it.
type HandlerRun struct {
	ID        string
	Partition int
	Seq       uint64
	Edge      string
	Uncertain bool
}

// DeadLetter is one message of the region's DLQ stream.
type DeadLetter struct {
	// Reason is the Onceplane-Reason header.
	Reason string
	// EventID is Onceplane-Event-Id (the event's ID, "" when it had none).
	EventID string
	// StreamSeq is Onceplane-Stream-Seq, the event's ingest sequence.
	StreamSeq uint64
	Partition int
}

// Injected is one fault the campaign injected.
type Injected struct {
	// At is when it started, from the campaign's start.
	At   time.Duration
	Kind FaultKind
	// Target names the edge or core node ("" for the producer).
	Target string
	// Affected is how many partitions the fault could leave work in flight
	// in: the target edge's owned partitions (plus one for an acquisition
	// racing the look-up, at most all), all of them for a core node, none
	// for a fault that cannot (a hostile publish).
	Affected int
	// Strikes is how many times it struck (cuts of a flap, hostile events
	// acked, chaos panics counted in a log); 1 for most.
	Strikes int
	// Detail says how (hold, offset, rates).
	Detail string
}

// Crash is a process that exited without the campaign stopping it.
type Crash struct {
	At      time.Duration
	Process string
	// Tail is the end of its log.
	Tail string
}

// Settle is what the region looked like once the faults stopped.
type Settle struct {
	// Within is how long the region had to drain.
	Within time.Duration
	// Took is how long draining took (Within when it did not).
	Took time.Duration
	// Undrained lists the partitions whose newest input consumer still had
	// events pending or unacknowledged (or that had none) at the deadline.
	Undrained []int
	// Unowned lists the partitions that no running edge owned, or two did,
	// per their /status, at the deadline.
	Unowned []int
	// NotReady maps each edge whose /readyz was not OK to its answer.
	NotReady map[string]string
	// Diagnosis describes the consumers and the edges when it did not settle.
	Diagnosis string
}

// History is everything a campaign recorded, the checker's only input.
type History struct {
	Partitions, Batch int
	Publishes         []Publish
	Runs              []HandlerRun
	DeadLetters       []DeadLetter
	Faults            []Injected
	// Excused counts, per ID, handler runs recorded before the sink failed
	// on purpose (chaos after the ledger): each may be followed by one more
	// unflagged run.
	Excused map[string]int
	Crashes []Crash
	Settle  Settle
}
