package sink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
)

// PositionedLedger is the ledger as a transactional sink
// (edge.Transactional): each batch's lines carry a batch token, and a
// commit line after them, fsync'd with them, records the partition's
// position (the highest ingest sequence applied, and the owner epoch). A
// line whose batch has no commit line ran but is not an effect: drills
// count effects (CommittedBatches), and a takeover knows which of the last
// owner's events were applied. Several processes may share one file: every
// write holds an exclusive flock and first reads what the others appended.
// An owner paused while it holds the lock stalls the others until it runs
// again (a drill sink, not a database).
type PositionedLedger struct {
	mu    sync.Mutex
	f     *os.File
	edge  string
	token string // this opening's batch token prefix
	n     uint64
	seen  int64 // bytes of the file read into pos
	pos   map[ledgerKey]edge.Position
}

type ledgerKey struct {
	source    string
	partition int
}

// LedgerMark is a positioned ledger's commit or fence line.
type LedgerMark struct {
	// Commit is the token of the batch whose lines it commits; empty on a fence.
	Commit    string `json:"commit,omitempty"`
	Fence     bool   `json:"fence,omitempty"`
	Source    string `json:"source"`
	Partition int    `json:"partition"`
	Epoch     uint64 `json:"epoch"`
	Applied   uint64 `json:"applied"`
	Edge      string `json:"edge"`
}

var _ edge.Transactional = (*PositionedLedger)(nil)

// OpenPositionedLedger opens (appending) or creates a positioned ledger.
func OpenPositionedLedger(path, edgeName string) (*PositionedLedger, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return &PositionedLedger{f: f, edge: edgeName, pos: map[ledgerKey]edge.Position{},
		token: edgeName + "." + strconv.FormatInt(time.Now().UnixNano(), 36)}, nil
}

// Close closes the file.
func (l *PositionedLedger) Close() error { return l.f.Close() }

// locked runs f holding the file's lock, after ending a line a killed
// writer tore and reading what other writers appended.
func (l *PositionedLedger) locked(f func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("ledger lock: %w", err)
	}
	defer syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	st, err := l.f.Stat()
	if err != nil {
		return err
	}
	if size := st.Size(); size > 0 {
		last := make([]byte, 1)
		if _, err := l.f.ReadAt(last, size-1); err != nil {
			return err
		}
		if last[0] != '\n' {
			if _, err := l.f.Write([]byte("\n")); err != nil {
				return err
			}
		}
	}
	if err := l.catchUp(); err != nil {
		return err
	}
	return f()
}

// catchUp reads the marks appended since the last read.
func (l *PositionedLedger) catchUp() error {
	r := bufio.NewReaderSize(io.NewSectionReader(l.f, l.seen, 1<<62), 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return nil // a partial line is not read until it ends
		}
		if err != nil {
			return err
		}
		l.seen += int64(len(line))
		if !bytes.Contains(line, []byte(`"applied"`)) {
			continue
		}
		var m LedgerMark
		if json.Unmarshal(line, &m) != nil {
			continue // torn
		}
		k := ledgerKey{m.Source, m.Partition}
		p := l.pos[k]
		p.Epoch = max(p.Epoch, m.Epoch)
		p.Applied = max(p.Applied, m.Applied)
		l.pos[k] = p
	}
}

// write appends b and fsyncs it; the file's new end has been read.
func (l *PositionedLedger) write(b []byte) error {
	if _, err := l.f.Write(b); err != nil {
		return err
	}
	if err := l.f.Sync(); err != nil {
		return err
	}
	l.seen += int64(len(b))
	return nil
}

// Fence implements edge.Transactional.
func (l *PositionedLedger) Fence(_ context.Context, source string, partition int, epoch uint64) (edge.Position, error) {
	var pos edge.Position
	err := l.locked(func() error {
		k := ledgerKey{source, partition}
		pos = l.pos[k]
		if pos.Epoch > epoch {
			return fmt.Errorf("ledger fence p%d: epoch %d < %d: %w", partition, epoch, pos.Epoch, edge.ErrSinkFenced)
		}
		b, _ := json.Marshal(LedgerMark{Fence: true, Source: source, Partition: partition, Epoch: epoch, Applied: pos.Applied, Edge: l.edge})
		if err := l.write(append(b, '\n')); err != nil {
			return fmt.Errorf("ledger fence: %w: %w", edge.ErrUnavailable, err)
		}
		pos.Epoch = epoch
		l.pos[k] = pos
		return nil
	})
	return pos, err
}

// Handle implements edge.Transactional: one batch's lines and its commit
// line, fsync'd; events at or below the position are applied already.
func (l *PositionedLedger) Handle(_ context.Context, evs []event.Event) []error {
	err := l.locked(func() error {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		now := time.Now().UTC()
		// The edge hands one partition's batch; a call mixing partitions
		// commits each apart.
		next := map[ledgerKey]edge.Position{}
		var commits []LedgerMark
		for _, idx := range event.ByInput(evs) {
			g := make([]event.Event, len(idx))
			for j, i := range idx {
				g[j] = evs[i]
			}
			k := ledgerKey{g[0].Source, g[0].Partition}
			pos := l.pos[k]
			var epoch, last uint64
			for _, ev := range g {
				epoch, last = max(epoch, ev.Epoch), max(last, ev.StreamSeq)
			}
			if pos.Epoch > epoch {
				return fmt.Errorf("ledger p%d: epoch %d < %d: %w", k.partition, epoch, pos.Epoch, edge.ErrSinkFenced)
			}
			l.n++
			token := l.token + "." + strconv.FormatUint(l.n, 10)
			for _, ev := range g {
				if k.source != "" && ev.StreamSeq <= pos.Applied {
					continue // applied already: a retry after a lost reply
				}
				_ = enc.Encode(LedgerLine{ID: ev.Key(), Partition: ev.Partition, Seq: ev.StreamSeq, Edge: l.edge, Uncertain: ev.Uncertain, Time: now, Batch: token})
			}
			pos = edge.Position{Epoch: epoch, Applied: max(pos.Applied, last)}
			commits = append(commits, LedgerMark{Commit: token, Source: k.source, Partition: k.partition, Epoch: pos.Epoch, Applied: pos.Applied, Edge: l.edge})
			next[k] = pos
		}
		// The lines durable first, then the commits: a commit line never
		// covers lines a crash of the machine lost.
		if err := l.write(buf.Bytes()); err != nil {
			return fmt.Errorf("%w: %w", edge.ErrUnavailable, err)
		}
		buf.Reset()
		for _, c := range commits {
			_ = enc.Encode(c)
		}
		if err := l.write(buf.Bytes()); err != nil {
			return fmt.Errorf("%w: %w", edge.ErrUnavailable, err)
		}
		maps.Copy(l.pos, next)
		return nil
	})
	if err == nil {
		return nil
	}
	errs := make([]error, len(evs))
	for i := range errs {
		errs[i] = fmt.Errorf("ledger: %w", err)
	}
	return errs
}

// CommittedBatches returns the batch tokens a positioned ledger file
// committed: a line whose Batch is not among them ran without taking
// effect.
func CommittedBatches(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		b := sc.Bytes()
		if !bytes.HasPrefix(b, []byte(`{"commit":`)) {
			continue
		}
		var m LedgerMark
		if json.Unmarshal(b, &m) == nil {
			out[m.Commit] = true
		}
	}
	return out, sc.Err()
}
