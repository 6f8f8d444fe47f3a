package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/devcert"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/proc"
)

// regionsRun is a three-region deployment as real processes, secure by
// default: a core process per region (TLS on every port, users per role)
// whose gateways go through six wanproxy processes (20 ms one way, each
// carrying one region's gateways only), and the edges the test starts.
type regionsRun struct {
	t       *testing.T
	dir     string
	regions []string
	creds   auth.Credentials
	certs   devcert.Files
	// client, cluster and gateway are each region's core ports.
	client, cluster, gateway map[string]int
	link                     map[[2]string]int // the wanproxy port of each direction
	wans                     map[[2]string]*proc.Proc
	cores                    map[string]*proc.Proc
	// standbyFor is each region's -standby-for (none when absent).
	standbyFor map[string]string
}

// startRegions starts the cores and links and waits until every region has
// provisioned its streams.
func startRegions(t *testing.T, standbyFor map[string]string) *regionsRun {
	dir := t.TempDir()
	regions := []string{"us-east", "eu-west", "ap-south"}
	creds, err := auth.Generate(filepath.Join(dir, "credentials"), auth.EdgeUsers(regions...)...)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := devcert.Generate(filepath.Join(dir, "tls"), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &regionsRun{t: t, dir: dir, regions: regions, creds: creds, certs: certs,
		client: map[string]int{}, cluster: map[string]int{}, gateway: map[string]int{},
		link: map[[2]string]int{}, wans: map[[2]string]*proc.Proc{}, cores: map[string]*proc.Proc{}, standbyFor: standbyFor}
	ports := coretest.FreePorts(t, 3*3+6)
	for i, r := range regions {
		m.client[r], m.cluster[r], m.gateway[r] = ports[3*i], ports[3*i+1], ports[3*i+2]
	}
	k := 9
	for _, a := range regions {
		for _, b := range regions {
			if a != b {
				m.link[[2]string{a, b}] = ports[k]
				k++
			}
		}
	}
	for l, port := range m.link {
		m.wans[l] = m.start("wan-"+l[0]+"-"+l[1], bins.wanproxy, "-listen", fmt.Sprintf("127.0.0.1:%d", port),
			"-target", fmt.Sprintf("127.0.0.1:%d", m.gateway[l[1]]), "-delay", "20ms", "-jitter", "2ms", "-from", l[0], "-log-level", "warn")
	}
	for _, r := range regions {
		m.cores[r] = m.start(r+"-core", bins.core, m.coreArgs(r)...)
	}
	// Every region's streams exist (each core provisions its own, then
	// its xclaims once the peers' claim logs exist).
	coretest.Eventually(t, 120*time.Second, "every region provisioned", func() bool {
		for _, r := range regions {
			if !m.hasStream(r, streams.Names{Region: r}.XClaimStream()) {
				return false
			}
		}
		return true
	})
	return m
}

func (m *regionsRun) start(name, bin string, args ...string) *proc.Proc {
	return startProc(m.t, m.dir, name, bin, args...)
}

// peers are the regions other than r.
func (m *regionsRun) peers(r string) []string {
	var out []string
	for _, o := range m.regions {
		if o != r {
			out = append(out, o)
		}
	}
	return out
}

func (m *regionsRun) coreArgs(r string) []string {
	var gws []string
	for _, o := range m.peers(r) {
		gws = append(gws, fmt.Sprintf("%s=127.0.0.1:%d", o, m.link[[2]string{r, o}]))
	}
	args := []string{"-name", r + "-core", "-region", r, "-port", fmt.Sprint(m.client[r]),
		"-cluster-port", fmt.Sprint(m.cluster[r]), "-routes", fmt.Sprintf("127.0.0.1:%d", m.cluster[r]),
		"-gateway-port", fmt.Sprint(m.gateway[r]), "-gateways", strings.Join(gws, ";"), "-gateway-advertise", "127.0.0.1:1",
		"-peers", strings.Join(m.peers(r), ","), "-partitions", "4", "-window", "1h", "-ingest-dedupe", "off",
		"-data", filepath.Join(m.dir, r+"-core"), "-credentials", filepath.Join(m.dir, "credentials"),
		"-tls-cert", m.certs.Cert, "-tls-key", m.certs.Key, "-tls-ca", m.certs.CA,
		"-max-memory", "268435456", "-max-store", "1073741824", "-log-level", "warn"}
	if s := m.standbyFor[r]; s != "" {
		args = append(args, "-standby-for", s)
	}
	for standby, of := range m.standbyFor {
		if of == r {
			args = append(args, "-standby", standby)
		}
	}
	return args
}

func (m *regionsRun) url(r string) string { return fmt.Sprintf("nats://127.0.0.1:%d", m.client[r]) }

// password is the file holding user u's password.
func (m *regionsRun) password(u auth.User) string {
	return filepath.Join(m.dir, "credentials", u.Name()+".password")
}

// edgeArgs are the flags of an edge of region r (its credentials, a
// ledger sink in <dir>/<ledger>.ledger.jsonl), then extra.
func (m *regionsRun) edgeArgs(r, name, ledger string, extra ...string) []string {
	return m.edgeArgsAs(auth.EdgeUser(r), r, name, ledger, extra...)
}

// edgeArgsAs is edgeArgs with user u's credentials (a failover edge's:
// auth.FailoverUser).
func (m *regionsRun) edgeArgsAs(u auth.User, r, name, ledger string, extra ...string) []string {
	return append([]string{"-nats", m.url(r), "-region", r, "-name", name, "-peers", strings.Join(m.peers(r), ","),
		"-nats-user", u.Name(), "-nats-password-file", m.password(u), "-tls-ca", m.certs.CA,
		"-window", "1h", "-sink", "ledger", "-ledger", filepath.Join(m.dir, ledger+".ledger.jsonl"), "-admin", "", "-log-level", "warn"}, extra...)
}

// dial connects to region r's core as role, over TLS.
func (m *regionsRun) dial(r string, role auth.Role) (*nats.Conn, jetstream.JetStream, error) {
	u := role.User()
	switch role {
	case auth.Edge:
		u = auth.EdgeUser(r)
	case auth.FailoverEdge:
		u = auth.FailoverUser(r)
	}
	nc, err := nats.Connect(m.url(r), append(auth.ClientOptions(u, m.creds.Password(u)), nats.RootCAs(m.certs.CA),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	return nc, js, err
}

// hasStream reports whether region r's core answers for stream.
func (m *regionsRun) hasStream(r, stream string) bool {
	nc, js, err := m.dial(r, auth.Admin)
	if err != nil {
		return false
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.Stream(ctx, stream)
	return err == nil
}

// connect is dial, closed when the test ends.
func (m *regionsRun) connect(r string, role auth.Role) jetstream.JetStream {
	nc, js, err := m.dial(r, role)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(nc.Close)
	return js
}
