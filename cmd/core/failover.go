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
	"github.com/onceplane/onceplane/jetstream/streams"
)

// regionFailover runs `core region-failover`: it declares region R lost and
// makes its standby continue R's claim log (streams.Promote), so that the
// standby's failover edges (edge -failover-of R) take R's partitions over
// from the mirrored ingest. It is idempotent.
func regionFailover(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("core region-failover", flag.ContinueOnError)
	var conn cli.NATSFlags
	url := fs.String("nats", "nats://127.0.0.1:4222", "a core node of the standby region")
	standby := fs.String("region", "", "the standby region (the one named in the lost region's topology `standby`, running with -standby-for)")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	conn.Register(fs, "admin")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: core region-failover -region <standby> [flags] <lost region>")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *standby == "" {
		fs.Usage()
		return errors.New("want -region <standby> and one lost region")
	}
	lost := fs.Arg(0)
	for _, r := range []string{lost, *standby} {
		if err := streams.ValidateRegion(r); err != nil {
			return err
		}
	}
	if lost == *standby {
		return fmt.Errorf("%s cannot stand by for itself", lost)
	}
	opts, err := conn.Options("onceplane-region-failover")
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*url, append(opts, nats.MaxReconnects(0))...)
	if err != nil {
		return fmt.Errorf("connect %s: %w", *url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var promoted []string
	err = retry(ctx, func(actx context.Context) (err error) {
		promoted, err = streams.Promote(actx, js, streams.Names{Region: *standby}, lost)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s failed over to %s: %s continue %s's claim log; start %s's failover edges (edge -region %s -failover-of %s)\n",
		lost, *standby, strings.Join(promoted, ", "), lost, *standby, *standby, lost)
	return nil
}

// regionFailback runs `core region-failback`: once the lost region's core
// nodes are back (their claim log fenced at start) and the standby's
// failover edges are stopped, the region's claim log is remade from the
// standby's continuation of it and its edges resume after the failover's
// records. It is idempotent.
func regionFailback(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("core region-failback", flag.ContinueOnError)
	var conn cli.NATSFlags
	url := fs.String("nats", "nats://127.0.0.1:4222", "a core node of the supercluster")
	standby := fs.String("region", "", "the standby region the failover ran in")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	conn.Register(fs, "admin")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: core region-failback -region <standby> [flags] <region>")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *standby == "" {
		fs.Usage()
		return errors.New("want -region <standby> and one region")
	}
	back := fs.Arg(0)
	opts, err := conn.Options("onceplane-region-failback")
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*url, append(opts, nats.MaxReconnects(0))...)
	if err != nil {
		return fmt.Errorf("connect %s: %w", *url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var l streams.Layout
	if err := retry(ctx, func(actx context.Context) (err error) {
		l, err = streams.ReadLayout(actx, js, streams.Names{Region: back})
		return err
	}); err != nil {
		return fmt.Errorf("%s's streams (are its core nodes back?): %w", back, err)
	}
	if err := retry(ctx, func(actx context.Context) error {
		return streams.FailBack(actx, js, *standby, streams.Names{Region: back, Shards: l.Shards})
	}); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s failed back from %s: its edges resume after the failover's records\n", back, *standby)
	return nil
}

// retry runs step, each attempt bounded to 15 s (a JetStream request whose
// reply is lost, right after a region went away, would otherwise wait for
// ctx's whole deadline), until it succeeds or ctx ends. Both steps are
// idempotent.
func retry(ctx context.Context, step func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := step(actx)
		cancel()
		if err == nil || ctx.Err() != nil || errors.Is(err, streams.ErrNotFailedOver) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}
