// Command mutants is the mutation check behind .ci/mutants: it copies the
// repository (tracked and untracked, unignored files; the working copy is
// never touched) to a temporary directory, makes one small source change
// per mutant there, runs the short tests that should catch it, and reports
// KILLED or SURVIVED. It exits 1 when a mutant survives, when a mutant's text
// is no longer in the source (a refactor must not silently disable a
// mutant: update the mutant with the code), when a mutant does not build,
// or when the unmutated tests fail.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// mutant is one small change to the source and the tests that must see it.
type mutant struct {
	name, what string
	file       string   // relative to the repository root
	old, new   string   // old must occur exactly once in file
	pkgs       []string // packages whose tests should catch it
	tests      []string // top-level test (or fuzz seed) names run in pkgs
}

var mutants = []mutant{
	{
		name: "A", what: "Classify: a repeat in a later batch (exact-set hit) decided as first time",
		file: "dedupe/state.go",
		old:  "\t\t\t\tout = append(out, PathExactHit)\n",
		new:  "\t\t\t\tout = append(out, PathExactMiss)\n",
		pkgs: []string{"./dedupe"}, tests: []string{"TestOwnersWithCrashesModel", "FuzzOwnersModel"},
	},
	{
		name: "A/edge", what: "mutant A, seen by the edge's effect checks (ledger run counts)",
		file: "dedupe/state.go",
		old:  "\t\t\t\tout = append(out, PathExactHit)\n",
		new:  "\t\t\t\tout = append(out, PathExactMiss)\n",
		pkgs: []string{"./edge"}, tests: []string{"TestTwoOwnersFenced", "TestScaleOutAndIn"},
	},
	{
		name: "B", what: "Apply ignores done records: every claimed ID becomes uncertain",
		file: "dedupe/state.go",
		old:  "\ts.markLogged(r.DoneThrough)\n",
		new:  "\t_ = s.markLogged\n",
		pkgs: []string{"./dedupe"}, tests: []string{"TestOwnersWithCrashesModel", "FuzzOwnersModel"},
	},
	{
		name: "C", what: "Classify: an uncertain ID decided exact-hit instead of re-run (silently skipped)",
		file: "dedupe/state.go",
		old:  "\t\t\t\t\tout = append(out, PathUncertainRerun)\n",
		new:  "\t\t\t\t\tout = append(out, PathExactHit)\n",
		pkgs: []string{"./dedupe"}, tests: []string{"TestClassifyPaths", "TestOwnersWithCrashesModel", "TestUncertainOnBothSidesRunsAgain"},
	},
	{
		name: "D", what: "edge: delivery gap check disabled (checkDelivery always nil)",
		file: "edge/pull.go",
		old:  "\tif d != last+1 {\n",
		new:  "\tif false && d != last+1 {\n",
		pkgs: []string{"./edge"}, tests: []string{"TestFirstDeliveryGapChecked"},
	},
	{
		name: "E", what: "edge: the handler's result ignored, so give-ups are acked without a dead letter",
		file: "edge/batch.go",
		old:  "\tfor i, e := range final {\n",
		new:  "\tfor i, e := range final[:0] {\n",
		pkgs: []string{"./edge"}, tests: []string{"TestBadInputToDLQ"},
	},
	{
		name: "F", what: "MergeRemote ignores takeover records: an ID uncertain on both sides is skipped by both",
		file: "dedupe/state.go",
		old:  "\t\t\trl.uncertain[h] = struct{}{}\n",
		new:  "\t\t\t_ = h\n",
		pkgs: []string{"./dedupe"}, tests: []string{"TestUncertainOnBothSidesRunsAgain", "TestRemoteMergeModel"},
	},
	{
		name: "G", what: "RecordTime returns the writer's time unclamped",
		file: "dedupe/state.go",
		old:  "\tif stored.IsZero() {\n\t\treturn r.Time\n\t}\n",
		new:  "\tif true {\n\t\treturn r.Time\n\t}\n",
		pkgs: []string{"./dedupe"}, tests: []string{"TestWriterClockAheadDoesNotMoveTheWindow", "TestSkewedClocksDecideTheSame"},
	},
	{
		name: "H", what: "handleIsolated re-runs a panicked batch's events unflagged",
		file: "edge/handler.go",
		old:  "\t\tev.Uncertain = true\n",
		new:  "\t\t_ = ev.Uncertain\n",
		pkgs: []string{"./edge"}, tests: []string{"TestPanicReRunsAreFlagged"},
	},
	{
		name: "L", what: "edge: consumers named by epoch, which restarts at 1 once an idle claim log ages out",
		file: "edge/partition.go",
		old:  "streams.ConsumerName(p, takeoverSeq)",
		new:  "streams.ConsumerName(p, st.Epoch()+0*takeoverSeq)",
		pkgs: []string{"./edge"}, tests: []string{"TestConsumerNamesNeverRepeat"},
	},
	{
		name: "M", what: "edge: a consumer gone counts as fenced even when the claim log is still this owner's",
		file: "edge/partition.go",
		old:  "if lerr == nil && moved {",
		new:  "if lerr == nil || moved {",
		pkgs: []string{"./edge"}, tests: []string{"TestConsumerLostNotFenced"},
	},
	{
		name: "N", what: "edge: a release drops the run before it ends, so the partition can run twice at once",
		file: "edge/ownership.go",
		old:  "\t\tr.releasing = true\n\t\tc.state[p] = partState{phase: releasing}\n",
		new:  "\t\tdelete(c.runs, p)\n\t\tdelete(c.state, p)\n",
		pkgs: []string{"./edge"}, tests: []string{"TestReleaseThenRetake"},
	},
	{
		name: "O", what: "edge: dead letters copy the producer's headers",
		file: "edge/deadletter.go",
		old:  "\thdr := nats.Header{}\n\thdr.Set(event.HeaderMsgID, fmt.Sprintf(",
		new:  "\thdr := nats.Header{}\n\tfor k, v := range d.m.Headers() {\n\t\thdr[k] = v\n\t}\n\thdr.Set(event.HeaderMsgID, fmt.Sprintf(",
		pkgs: []string{"./edge"}, tests: []string{"TestHostileHeadersCannotStopAPartition", "TestDeadLetterCarriesOnlyItsOwnHeaders"},
	},
	{
		name: "P", what: "failover.Planner: fences under the same view are not remembered (split views flap)",
		file: "failover/planner.go",
		old:  "\t\tpl.fences[p] = streak{last: at, count: f.count + 1}\n",
		new:  "\t\t_, _ = f, at\n",
		pkgs: []string{"./failover", "./edge"}, tests: []string{"TestPlannerRefence", "TestSplitViewDoesNotFlap"},
	},
	{
		name: "X", what: "failover.Planner: a handover under way is taken at the next step (the live owner is fenced mid-batch)",
		file: "failover/planner.go",
		old:  "\t\t\tcontinue // its handover is still under way\n",
		new:  "\t\t\t_ = p\n",
		pkgs: []string{"./failover"}, tests: []string{"TestPlannerHandoffNotCutShort"},
	},
	{
		name: "Y", what: "failover.Planner: a failed partition is retried every step, however often it fails (an overloaded core meets every partition's retry every second)",
		file: "failover/planner.go",
		old:  "\t\t\tcontinue // failed lately: not yet again\n",
		new:  "\t\t\t_ = f\n",
		pkgs: []string{"./failover"}, tests: []string{"TestPlannerFailureBackoff"},
	},
	{
		name: "Q", what: "claimlog: a tail after the owner's record counts as foreign even when another writer's record is in it (a stale owner is not fenced)",
		file: "jetstream/claimlog/claimlog.go",
		old:  "\t\t\tother = true\n",
		new:  "",
		pkgs: []string{"./jetstream/claimlog"}, tests: []string{"TestForeignTailDoesNotFence", "TestAppendFencesStaleWriter"},
	},
	{
		name: "R", what: "claimlog: a replay stops at foreign bytes (one producer's reply subject stops a partition for good)",
		file: "jetstream/claimlog/claimlog.go",
		old:  "\t\tcase errors.Is(err, dedupe.ErrForeign):\n\t\t\tl.foreign(p, seq)\n",
		new:  "",
		pkgs: []string{"./jetstream/claimlog"}, tests: []string{"TestForeignTailDoesNotFence"},
	},
	{
		name: "I", what: "event.ValidateID accepts '>' (an ID that is not one subject token)",
		file: "event/event.go",
		old:  "c == '.' || c == '*' || c == '>'",
		new:  "c == '.' || c == '*'",
		pkgs: []string{"./event"}, tests: []string{"FuzzCheck"},
	},
	{
		name: "J", what: "event.Check skips the routing check (a misrouted event escapes its partition's dedupe)",
		file: "event/event.go",
		old:  "\tif got := Partition(id, n); got != p {\n",
		new:  "\tif got := Partition(id, n); false && got != p {\n",
		pkgs: []string{"./event"}, tests: []string{"FuzzCheck"},
	},
	{
		name: "K", what: "event.Check refuses every event",
		file: "event/event.go",
		old:  "\treturn HashID(Key(tenant, id)), nil\n",
		new:  "\treturn Hash{}, fmt.Errorf(\"%w: always\", ErrMisrouted)\n",
		pkgs: []string{"./event"}, tests: []string{"FuzzCheck"},
	},
	{
		name: "S", what: "event.Key ignores the tenant (one ID space for every producer: a tenant pre-claims another's IDs)",
		file: "event/event.go",
		old:  "	return tenant + \".\" + id\n",
		new:  "	return id\n",
		pkgs: []string{"./event", "./auth"}, tests: []string{"TestCheck", "FuzzCheck", "TestTenantsCannotSuppressEachOther"},
	},
	{
		name: "T", what: "producer: the helper also sends Nats-Msg-Id (another producer can fill the ingest window with its IDs)",
		file: "producer/producer.go",
		old:  "\tm.Header.Set(event.HeaderID, id)\n",
		new:  "\tm.Header.Set(event.HeaderID, id)\n\tm.Header.Set(event.HeaderMsgID, id)\n",
		pkgs: []string{"./auth"}, tests: []string{"TestTenantsCannotSuppressEachOther"},
	},
	{
		name: "U", what: "edge: the tenant is read from a producer's header, not from the stored subject",
		file: "edge/batch.go",
		old:  "\t\ttenant := streams.TenantOf(in.m.Subject())\n",
		new:  "\t\ttenant := event.DefaultTenant\n\t\tif t := in.m.Headers().Get(event.HeaderTenant); t != \"\" {\n\t\t\ttenant = t\n\t\t}\n\t\t_ = streams.TenantOf\n",
		pkgs: []string{"./auth"}, tests: []string{"TestTenantsCannotSuppressEachOther"},
	},
	{
		name: "W", what: "edge: a batch starts a trace of its own (an event's trace loses its claim append and the merges elsewhere)",
		file: "edge/batch.go",
		old:  "\t\tbctx = trace.ContextWithRemoteSpanContext(ctx, v.parent)\n",
		new:  "\t\tbctx = ctx\n",
		pkgs: []string{"./edge"}, tests: []string{"TestSpansAndMetrics"},
	},
	{
		name: "V", what: "gossip: members count for ownership without proving their role and region",
		file: "gossip/gossip.go",
		old:  "\t\tif len(c.opt.Proof) > 0 && !m.Proven {\n\t\t\tcontinue\n\t\t}\n",
		new:  "",
		pkgs: []string{"./gossip"}, tests: []string{"TestUnprovenMemberOwnsNothing"},
	},
	{
		name: "Z", what: "regionwatch: half the regions are a majority (a region cut from its standby alone is declared lost)",
		file: "regionwatch/regionwatch.go",
		old:  "\treturn standbyAgrees && 2*agree > observers\n",
		new:  "\treturn standbyAgrees && 2*agree >= observers\n",
		pkgs: []string{"./regionwatch"}, tests: []string{"TestLost"},
	},
	{
		name: "Z/carry", what: "failback: the claims a lost region never mirrored are not carried (its edges re-run their events as new)",
		file: "dedupe/record.go",
		old:  "\t\tout = append(out, Record{Kind: KindClaim, Epoch: last.Epoch, Writer: CarryWriter, Time: r.Time, IDs: r.IDs})\n",
		new:  "\t\t_ = r\n",
		pkgs: []string{"./dedupe"}, tests: []string{"TestCarry"},
	},
	{
		name: "Z/unheard", what: "regionwatch: a view that never heard the region since its restart does not count (no majority forms, the region is never declared)",
		file: "regionwatch/regionwatch.go",
		old:  "\t\tif !v.Answered || !v.Never {\n",
		new:  "\t\tif true {\n",
		pkgs: []string{"./regionwatch"}, tests: []string{"TestUnheard"},
	},
	{
		name: "Z/isolated", what: "regionwatch: exactly half the regions counts as a majority (in two regions, one cut off from the other goes on claiming while its standby takes it over)",
		file: "regionwatch/isolation.go",
		old:  "\treturn answered && 2*(1+heard) <= regions\n",
		new:  "\treturn answered && 2*(1+heard) < regions\n",
		pkgs: []string{"./regionwatch"}, tests: []string{"TestIsolated"},
	},
	{
		name: "Z/tail", what: "edge: the xclaims copy of a claim the tail merged is merged again (a record merged twice)",
		file: "edge/remotecursor.go",
		old:  "\tif c.lo != 0 && seq >= c.lo && seq <= c.hi {\n\t\treturn false\n\t}\n",
		new:  "",
		pkgs: []string{"./edge"}, tests: []string{"TestRemoteCursorMergesEachRecordOnce", "TestRemoteCursorRestartedLog"},
	},
	{
		name: "Z/tail-old", what: "edge: the tail reads a log sourced again from its start from its start (old records merged at today's time)",
		file: "edge/remotecursor.go",
		old:  "\tif seq <= max(c.x, c.top) {\n",
		new:  "\tif seq <= max(c.x, c.hi) {\n",
		pkgs: []string{"./edge"}, tests: []string{"TestRemoteCursorRestartedLog"},
	},
	{
		name: "Z/move-parts", what: "failover: the previous owners are computed from the new homes (a partition reshuffled by a home move is taken from its live owner mid-batch)",
		file: "failover/planner.go",
		old:  "\t\tprevOwner = AssignSome(pl.prev, pl.N, pl.prevPart)\n",
		new:  "\t\tprevOwner = AssignSome(pl.prev, pl.N, pl.Parts)\n",
		pkgs: []string{"./failover"}, tests: []string{"TestPlannerPartsChange"},
	},
	{
		name: "Z/move-away", what: "dedupe: a home moved away is not recorded as such (the old home's edges take it back and decide it too)",
		file: "dedupe/state.go",
		old:  "\t\ts.movedTo, _ = IsMoveAway(r)\n",
		new:  "\n",
		pkgs: []string{"./dedupe"}, tests: []string{"TestMoveHandsClaimsOver"},
	},
	{
		name: "Z/move-claims", what: "dedupe: a home move carries claims at their earliest time (an ID is forgotten sooner in its new home)",
		file: "dedupe/move.go",
		old:  "\t\t\tif r.Time.After(cur.Time) {\n",
		new:  "\t\t\tif r.Time.Before(cur.Time) {\n",
		pkgs: []string{"./dedupe"}, tests: []string{"TestMoveHandsClaimsOver"},
	},
	{
		name: "Z/resolve-owed", what: "dedupe: a claim above the sink's position is taken as applied (its events are lost)",
		file: "dedupe/resolve.go",
		old:  "\t\t\tdefault:\n\t\t\t\towed[h] = struct{}{}\n",
		new:  "\t\t\tdefault:\n\t\t\t\tdone[h] = struct{}{}\n",
		pkgs: []string{"./dedupe"}, tests: []string{"TestResolveSettlesClaimsAgainstThePosition", "TestTransactionalModel"},
	},
	{
		name: "Z/resolve-source", what: "dedupe: claims counted in another input's sequences are settled against this one's position",
		file: "dedupe/resolve.go",
		old:  "\t\tknown := source != \"\" && c.seq != 0 && s.sources[c.epoch] == source\n",
		new:  "\t\tknown := source != \"\" && c.seq != 0\n",
		pkgs: []string{"./dedupe"}, tests: []string{"TestResolveSettlesClaimsAgainstThePosition"},
	},
	{
		name: "Z/resolve-reruns", what: "dedupe: an uncertain re-run the sink did not apply becomes owed (it runs again unflagged; an earlier owner may have applied it)",
		file: "dedupe/resolve.go",
		old:  "\t\t\tcase i < c.reruns:\n",
		new:  "\t\t\tcase i < 0:\n",
		pkgs: []string{"./dedupe"}, tests: []string{"TestRerunNotAppliedStaysUncertain"},
	},
	{
		name: "Z/tx-dlq-late", what: "edge: a transactional sink's refused event is dead-lettered after the rest of its batch commits (a kill between loses it)",
		file: "edge/batch.go",
		old:  "\tif c.tx != nil {\n\t\tearly = map[int]bool{}\n",
		new:  "\tif false {\n\t\tearly = map[int]bool{}\n",
		pkgs: []string{"./edge"}, tests: []string{"TestTransactionalRefusalDeadLetteredBeforeTheRest"},
	},
	{
		name: "Z/sink-fence", what: "pgsink: a stale owner's transaction is not refused (it lands after a takeover read the position)",
		file: "sink/pgsink/pgsink.go",
		old:  "\t\t\tcase uint64(held) > epoch:\n",
		new:  "\t\t\tcase uint64(held) > epoch+1000:\n",
		pkgs: []string{"./sink/pgsink"}, tests: []string{"TestFenceRefusesAStaleOwner", "TestPausedOwnerIsRefusedAfterATakeover"},
	},
}

func main() {
	only := flag.String("only", "", "comma-separated mutant names to run (default: all)")
	timeout := flag.Duration("timeout", 150*time.Second, "go test -timeout for each mutant")
	keep := flag.Bool("keep", false, "keep the temporary copy")
	verbose := flag.Bool("v", false, "print the tests' output of every mutant")
	list := flag.Bool("list", false, "list the mutants and exit")
	flag.Parse()
	if *list {
		for _, m := range mutants {
			fmt.Printf("%-7s %s (%s; %s %s)\n", m.name, m.what, m.file, strings.Join(m.pkgs, " "), strings.Join(m.tests, "|"))
		}
		return
	}
	sel := mutants
	if *only != "" {
		sel = nil
		for _, n := range strings.Split(*only, ",") {
			i := slices.IndexFunc(mutants, func(m mutant) bool { return m.name == n })
			if i < 0 {
				fatalf("unknown mutant %q (-list lists them)", n)
			}
			sel = append(sel, mutants[i])
		}
	}
	if err := run(sel, *timeout, *keep, *verbose); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "mutants: "+format+"\n", a...)
	os.Exit(1)
}

type result struct {
	m       mutant
	verdict string // KILLED, SURVIVED, ERROR
	by      string
	took    time.Duration
}

func run(sel []mutant, timeout time.Duration, keep, verbose bool) error {
	root, err := output("", "git", "rev-parse", "--show-toplevel")
	if err != nil {
		return fmt.Errorf("find the repository: %w", err)
	}
	root = strings.TrimSpace(root)
	tmp, err := os.MkdirTemp("", "onceplane-mutants-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	if keep {
		fmt.Println("copy kept in", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if err := copyRepo(root, tmp); err != nil {
		return err
	}
	// Every mutant's text must be there before anything runs.
	for _, m := range sel {
		b, err := os.ReadFile(filepath.Join(tmp, m.file))
		if err != nil {
			return fmt.Errorf("mutant %s: %w", m.name, err)
		}
		if n := bytes.Count(b, []byte(m.old)); n != 1 {
			return fmt.Errorf("mutant %s: %q occurs %d times in %s, want exactly once: the code changed; update the mutant", m.name, m.old, n, m.file)
		}
	}
	// The unmutated tests must pass, or every mutant would look killed.
	t0 := time.Now()
	tests, pkgs := map[string]bool{}, map[string]bool{}
	for _, m := range sel {
		for _, t := range m.tests {
			tests[t] = true
		}
		for _, p := range m.pkgs {
			pkgs[p] = true
		}
	}
	out, err := goTest(tmp, slices.Sorted(maps.Keys(pkgs)), slices.Sorted(maps.Keys(tests)), timeout)
	if err != nil {
		fmt.Print(out)
		return fmt.Errorf("the unmutated tests fail (%v): fix them first", err)
	}
	fmt.Printf("baseline: the unmutated tests pass (%.1fs)\n", time.Since(t0).Seconds())

	var results []result
	for _, m := range sel {
		r := result{m: m}
		start := time.Now()
		path := filepath.Join(tmp, m.file)
		orig, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.WriteFile(path, bytes.Replace(orig, []byte(m.old), []byte(m.new), 1), 0o644); err != nil {
			return err
		}
		out, err := goTest(tmp, m.pkgs, m.tests, timeout)
		if werr := os.WriteFile(path, orig, 0o644); werr != nil {
			return fmt.Errorf("restore %s: %w", m.file, werr)
		}
		r.took = time.Since(start)
		switch {
		case err == nil:
			r.verdict = "SURVIVED"
		case strings.Contains(out, "[build failed]") || strings.Contains(out, "[setup failed]"):
			r.verdict, r.by = "ERROR", "does not build"
		default:
			r.verdict, r.by = "KILLED", caughtBy(out)
		}
		fmt.Printf("%-7s %-8s %5.1fs  %s", m.name, r.verdict, r.took.Seconds(), m.what)
		if r.by != "" {
			fmt.Printf("  [%s]", r.by)
		}
		fmt.Println()
		if verbose || r.verdict != "KILLED" {
			fmt.Print(indent(tail(out, 3000)))
		}
		results = append(results, r)
	}
	var bad []string
	for _, r := range results {
		if r.verdict != "KILLED" {
			bad = append(bad, r.m.name+" "+r.verdict)
		}
	}
	fmt.Printf("%d mutants, %d killed, in %.0fs\n", len(results), len(results)-len(bad), time.Since(t0).Seconds())
	if len(bad) > 0 {
		return fmt.Errorf("not killed: %s", strings.Join(bad, ", "))
	}
	return nil
}

// goTest runs the named tests of pkgs in dir, short and uncached. It does
// not stop at the first failure, so the report names every test that saw
// the mutant.
func goTest(dir string, pkgs, tests []string, timeout time.Duration) (string, error) {
	quoted := make([]string, len(tests))
	for i, t := range tests {
		quoted[i] = regexp.QuoteMeta(t)
	}
	args := append([]string{"test", "-short", "-count=1", "-timeout", timeout.String(),
		"-run", "^(" + strings.Join(quoted, "|") + ")$"}, pkgs...)
	// The go command stops the test binary at -timeout; this bounds the
	// build and anything else.
	ctx, cancel := context.WithTimeout(context.Background(), timeout+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	if ctx.Err() != nil {
		return b.String(), fmt.Errorf("go test did not end within %v: %w", timeout+2*time.Minute, ctx.Err())
	}
	return b.String(), err
}

var failRE = regexp.MustCompile(`--- FAIL: (\S+)`)

// caughtBy names the failing tests in go test's output.
func caughtBy(out string) string {
	var names []string
	for _, m := range failRE.FindAllStringSubmatch(out, -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	if strings.Contains(out, "panic: test timed out") {
		names = append(names, "test timeout")
	}
	if len(names) == 0 {
		return "go test failed"
	}
	return strings.Join(names, ", ")
}

// copyRepo copies the repository's tracked and untracked unignored files
// from root to dst.
func copyRepo(root, dst string) error {
	ls, err := output(root, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	if err != nil {
		return fmt.Errorf("list files: %w", err)
	}
	for _, rel := range strings.Split(ls, "\x00") {
		if rel == "" {
			continue
		}
		if err := copyFile(filepath.Join(root, rel), filepath.Join(dst, rel)); err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	fi, err := os.Lstat(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil // deleted in the working copy
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func output(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(b), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
