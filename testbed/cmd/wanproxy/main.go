// Command wanproxy runs one simulated WAN link (package wan) as a process:
// a TCP proxy with one-way delay, jitter and loss stalls in front of another
// region's gateway, with an HTTP control port to cut, heal and re-tune it
// during drills (containers, multi-process deployments).
//
//	wanproxy -listen :7300 -target eu-west-core-0:7222 -delay 40ms -jitter 2ms -control 127.0.0.1:7301
//	curl -X POST localhost:7301/cut; curl -X POST localhost:7301/heal
//	wanproxy health -url http://127.0.0.1:7301/healthz   (container healthchecks)
//	curl -X POST 'localhost:7301/delay?delay=60ms&jitter=5ms'; curl localhost:7301/stats
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/testbed/wan"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "health" {
		os.Exit(cli.Health(os.Args[2:], "http://127.0.0.1:8080/healthz"))
	}
	var (
		o                wan.LinkOptions
		targets, control string
		logLevel         string
	)
	flag.StringVar(&o.Name, "name", "", "link name for logs (default: the listen address)")
	flag.StringVar(&o.Listen, "listen", "127.0.0.1:0", "listen host:port")
	flag.StringVar(&targets, "target", "", "comma-separated host:port targets, dialed in order until one answers")
	flag.DurationVar(&o.Delay, "delay", 0, "one-way delay added in each direction (RTT/2)")
	flag.DurationVar(&o.Jitter, "jitter", 0, "extra one-way delay, uniform in [0, jitter)")
	flag.Float64Var(&o.Loss, "loss", 0, "chance (0-1) that a chunk stalls as for a TCP retransmit")
	flag.StringVar(&o.From, "from", "", "the region whose gateways this link carries: any other region's gateway (which learned this address by NATS gossip) is refused, by its TLS ALPN or its CONNECT (empty: forward any connection)")
	flag.StringVar(&control, "control", "", "HTTP control address: POST /cut, /heal, /delay?delay=&jitter=, /loss?loss=; GET /stats, /healthz (empty: off)")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	insecure := cli.InsecureFlag(flag.CommandLine)
	flag.Parse()
	log := cli.Logger(logLevel)
	o.Logger = log
	refuseExposed(log, control, *insecure)
	if targets == "" {
		cli.Fatal(log, "start", errors.New("-target is required"))
	}
	o.Targets = strings.Split(targets, ",")
	l, err := wan.Listen(o)
	if err != nil {
		cli.Fatal(log, "start", err)
	}
	defer l.Close()
	ctx, stop := cli.SignalContext()
	defer stop()
	if control != "" {
		mux := http.NewServeMux()
		post := func(path string, f func(r *http.Request) error) {
			mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
				if err := f(r); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				_ = json.NewEncoder(w).Encode(l.Stats())
			})
		}
		post("/cut", func(*http.Request) error { l.Cut(); return nil })
		post("/heal", func(*http.Request) error { l.Heal(); return nil })
		post("/delay", func(r *http.Request) error {
			d, err := time.ParseDuration(r.URL.Query().Get("delay"))
			if err != nil {
				return err
			}
			j := time.Duration(0)
			if s := r.URL.Query().Get("jitter"); s != "" {
				if j, err = time.ParseDuration(s); err != nil {
					return err
				}
			}
			l.SetDelay(d, j)
			return nil
		})
		post("/loss", func(r *http.Request) error {
			var v float64
			if err := json.Unmarshal([]byte(r.URL.Query().Get("loss")), &v); err != nil {
				return err
			}
			l.SetLoss(v)
			return nil
		})
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
			_ = json.NewEncoder(w).Encode(map[string]any{"cut": l.IsCut(), "stats": l.Stats()})
		})
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		srv := &http.Server{Addr: control, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("control port", "err", err)
				stop()
			}
		}()
		defer srv.Close()
	}
	log.Info("wan link up", "listen", l.Addr(), "targets", o.Targets, "delay", o.Delay, "jitter", o.Jitter, "loss", o.Loss, "control", control)
	<-ctx.Done()
}
