package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// regionCommand is what `core region-failover` and `core region-failback`
// share: their flags, the standby and the region they act on, and an admin
// connection to the supercluster, closed by done.
type regionCommand struct {
	standby, region string
	js              jetstream.JetStream
	ctx             context.Context
	done            func()
}

// parseRegionCommand parses name's flags and positional region, validates
// both regions and connects.
func parseRegionCommand(name, what string, timeout time.Duration, args []string, more ...func(*flag.FlagSet)) (*regionCommand, error) {
	fs := flag.NewFlagSet("core "+name, flag.ContinueOnError)
	for _, m := range more {
		m(fs)
	}
	var conn cli.NATSFlags
	url := fs.String("nats", "nats://127.0.0.1:4222", "a core node of the supercluster (the standby region's)")
	standby := fs.String("region", "", "the standby region (the one named in the region's topology `standby`, running with -standby-for)")
	limit := fs.Duration("timeout", timeout, "give up after this long")
	conn.Register(fs, "admin")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: core %s -region <standby> [flags] <%s>\n", name, what)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != 1 || *standby == "" {
		fs.Usage()
		return nil, fmt.Errorf("want -region <standby> and one %s", what)
	}
	region := fs.Arg(0)
	for _, r := range []string{region, *standby} {
		if err := streams.ValidateRegion(r); err != nil {
			return nil, err
		}
	}
	if region == *standby {
		return nil, fmt.Errorf("%s cannot stand by for itself", region)
	}
	js, ctx, done, err := adminConnect(name, *url, conn, *limit)
	if err != nil {
		return nil, err
	}
	return &regionCommand{standby: *standby, region: region, js: js, ctx: ctx, done: done}, nil
}

// adminConnect connects command name to a core node at url as conn says,
// with a context bounded to limit; done closes both.
func adminConnect(name, url string, conn cli.NATSFlags, limit time.Duration) (jetstream.JetStream, context.Context, func(), error) {
	opts, err := conn.Options("onceplane-" + name)
	if err != nil {
		return nil, nil, nil, err
	}
	nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(0))...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	return js, ctx, func() { cancel(); nc.Close() }, nil
}

// regionFailover runs `core region-failover`: it declares region R lost and
// makes its standby continue R's claim log (streams.Promote), so that the
// standby's failover edges (edge -failover-of R) take R's partitions over
// from the mirrored ingest. It is idempotent.
func regionFailover(args []string, out io.Writer) error {
	c, err := parseRegionCommand("region-failover", "lost region", time.Minute, args)
	if err != nil {
		return err
	}
	defer c.done()
	var promoted []string
	// Small requests, bounded to 5 s each: the meta leader may have been
	// in the lost region, and the first replies lost with it (seen: a
	// 15 s attempt made the declaration take 15 s).
	if err := retry(c.ctx, 5*time.Second, func(actx context.Context) (err error) {
		promoted, err = streams.Promote(actx, c.js, streams.Names{Region: c.standby}, c.region)
		return err
	}); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s failed over to %s: %s continue %s's claim log; start %s's failover edges (edge -region %s -failover-of %s)\n",
		c.region, c.standby, strings.Join(promoted, ", "), c.region, c.standby, c.standby, c.region)
	return nil
}

// regionFailback runs `core region-failback`: once the lost region's core
// nodes are back (their claim log fenced at start) and the standby's
// failover edges are stopped, the region's claim log is remade from the
// standby's continuation of it and its edges resume after the failover's
// records. It is idempotent.
func regionFailback(args []string, out io.Writer) error {
	o := streams.FailBackOptions{Carry: claimlog.CarrySuperseded}
	c, err := parseRegionCommand("region-failback", "region", 2*time.Minute, args, func(fs *flag.FlagSet) {
		fs.BoolVar(&o.Supersede, "supersede", false, "give the region the failover's log even where its own parted from it (claims its standby never mirrored before the loss): its records after the parting are kept in onceplane-<region>-superseded")
	})
	if err != nil {
		return err
	}
	defer c.done()
	var l streams.Layout
	if err := retry(c.ctx, 15*time.Second, func(actx context.Context) (err error) {
		l, err = streams.ReadLayout(actx, c.js, streams.Names{Region: c.region})
		return err
	}); err != nil {
		return fmt.Errorf("%s's streams (are its core nodes back?): %w", c.region, err)
	}
	superseded := 0
	if err := retry(c.ctx, 15*time.Second, func(actx context.Context) (err error) {
		superseded, err = streams.FailBack(actx, c.js, c.standby, streams.Names{Region: c.region, Shards: l.Shards}, o)
		return err
	}); err != nil {
		if errors.Is(err, streams.ErrNotFailedOver) && !o.Supersede {
			err = fmt.Errorf("%w\n(if %s was lost abruptly, its last claims never reached %s: run again with -supersede to keep them aside and fail back)", err, c.region, c.standby)
		}
		return err
	}
	fmt.Fprintf(out, "%s failed back from %s: its edges resume after the failover's records", c.region, c.standby)
	if superseded > 0 {
		fmt.Fprintf(out, "; %d of its claims never reached %s and were superseded (kept in %s; their events were handled again by the failover, flagged uncertain)",
			superseded, c.standby, streams.Names{Region: c.region}.SupersededStream())
	}
	fmt.Fprintln(out)
	return nil
}

// retry runs an idempotent step, each attempt bounded to each (a
// JetStream request whose reply is lost, right after a region went away,
// would otherwise wait for ctx's whole deadline), until it succeeds, the
// failback is refused (ErrNotFailedOver), or ctx ends.
func retry(ctx context.Context, each time.Duration, step func(context.Context) error) error {
	return poll.Retry(ctx, poll.Attempts{Each: each, Final: func(err error) bool { return errors.Is(err, streams.ErrNotFailedOver) }}, step)
}
