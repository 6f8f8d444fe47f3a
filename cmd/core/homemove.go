package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/jetstream/rehome"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// homeMove runs `core home-move`: in strict mode, a partition's home moves
// to another region (rehome.Move): the old home lets it go and is fenced,
// its claims are carried, and the new home sources it from where the old
// one stopped. It is idempotent: a move cut short is finished by running
// it again.
func homeMove(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("core home-move", flag.ContinueOnError)
	var conn cli.NATSFlags
	url := fs.String("nats", "nats://127.0.0.1:4222", "a core node of the supercluster (any region's)")
	regions := fs.String("regions", "", "every region of the deployment, comma-separated")
	to := fs.String("to", "", "the partition's new home region")
	limit := fs.Duration("timeout", 2*time.Minute, "give up after this long (run again to finish)")
	wait := fs.Duration("release-wait", 15*time.Second, "how long the old home's edges get to let the partition go before it is fenced anyway")
	conn.Register(fs, "admin")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: core home-move -regions <r1,r2,...> -to <region> [flags] <partition>")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *to == "" || *regions == "" {
		fs.Usage()
		return fmt.Errorf("want -regions, -to and one partition")
	}
	p, err := strconv.Atoi(fs.Arg(0))
	if err != nil || p < 0 {
		return fmt.Errorf("partition %q: not a partition number", fs.Arg(0))
	}
	rs := strings.Split(*regions, ",")
	for _, r := range rs {
		if err := streams.ValidateRegion(r); err != nil {
			return err
		}
	}
	js, ctx, done, err := adminConnect("home-move", *url, conn, *limit)
	if err != nil {
		return err
	}
	defer done()
	res, err := rehome.Move(ctx, js, rs, p, *to, rehome.Options{ReleaseWait: *wait})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "partition %d moved from %s to %s (homes version %d): %d claimed IDs carried (%d uncertain); %s's edges decide it from now on\n",
		res.Partition, res.From, res.To, res.Version, res.Carried, res.Uncertain, res.To)
	return nil
}
