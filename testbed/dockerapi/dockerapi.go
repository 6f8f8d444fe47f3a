// Package dockerapi is a small client of the Docker Engine API over its unix
// socket: the calls a drill runner makes against a Compose project (find a
// service's container, kill, stop, start, pause, unpause, cut it from a network
// and join it again). It needs no docker CLI, so it runs in a FROM-scratch
// image with the socket mounted.
package dockerapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Client talks to one Docker engine.
type Client struct {
	hc *http.Client
}

// New returns a client of the engine listening on socket. Empty means
// /var/run/docker.sock.
func New(socket string) *Client {
	if socket == "" {
		socket = "/var/run/docker.sock"
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Container is what the drill needs to know of a container.
type Container struct {
	ID     string
	Name   string            // without the leading slash
	Labels map[string]string // compose labels among them
	State  string            // created, running, paused, exited...
	Health string            // healthy, unhealthy, starting; empty without a healthcheck
}

// Service returns the label value of the Compose service.
func (c Container) Service() string { return c.Labels["com.docker.compose.service"] }

// Project returns the label value of the Compose project.
func (c Container) Project() string { return c.Labels["com.docker.compose.project"] }

// Inspect returns the container named or identified by id.
func (c *Client) Inspect(ctx context.Context, id string) (Container, error) {
	var out struct {
		ID     string `json:"Id"`
		Name   string
		Config struct{ Labels map[string]string }
		State  struct {
			Status string
			Health *struct{ Status string }
		}
	}
	if err := c.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/json", nil, &out); err != nil {
		return Container{}, err
	}
	ct := Container{ID: out.ID, Name: trimSlash(out.Name), Labels: out.Config.Labels, State: out.State.Status}
	if out.State.Health != nil {
		ct.Health = out.State.Health.Status
	}
	return ct, nil
}

// Project lists the containers of a Compose project, stopped ones too.
func (c *Client) Project(ctx context.Context, project string) ([]Container, error) {
	filters, _ := json.Marshal(map[string][]string{"label": {"com.docker.compose.project=" + project}})
	var list []struct {
		ID     string `json:"Id"`
		Names  []string
		Labels map[string]string
		State  string
	}
	if err := c.do(ctx, http.MethodGet, "/containers/json?all=1&filters="+url.QueryEscape(string(filters)), nil, &list); err != nil {
		return nil, err
	}
	out := make([]Container, 0, len(list))
	for _, l := range list {
		ct := Container{ID: l.ID, Labels: l.Labels, State: l.State}
		if len(l.Names) > 0 {
			ct.Name = trimSlash(l.Names[0])
		}
		out = append(out, ct)
	}
	return out, nil
}

// Kill sends signal (e.g. "SIGKILL") to the container's main process.
func (c *Client) Kill(ctx context.Context, id, signal string) error {
	return c.do(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/kill?signal="+url.QueryEscape(signal), nil, nil)
}

// Start starts a stopped container (a running one is left alone).
func (c *Client) Start(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/start", nil, nil)
}

// Stop stops the container gracefully: SIGTERM, then SIGKILL after grace
// (whole seconds), and returns once it has exited. A container stopped this
// way stays stopped (its restart policy does not apply) until Start.
func (c *Client) Stop(ctx context.Context, id string, grace time.Duration) error {
	return c.do(ctx, http.MethodPost, fmt.Sprintf("/containers/%s/stop?t=%d", url.PathEscape(id), int(grace.Seconds())), nil, nil)
}

// Pause freezes every process of the container (SIGSTOP-like, through the
// cgroup freezer); Unpause thaws them.
func (c *Client) Pause(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/pause", nil, nil)
}

// Unpause thaws a paused container.
func (c *Client) Unpause(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/unpause", nil, nil)
}

// Disconnect removes the container from network: its connections over it
// break and its name no longer resolves there.
func (c *Client) Disconnect(ctx context.Context, network, id string) error {
	return c.do(ctx, http.MethodPost, "/networks/"+url.PathEscape(network)+"/disconnect",
		map[string]any{"Container": id, "Force": true}, nil)
}

// Connect joins the container to network again, resolvable there by aliases.
func (c *Client) Connect(ctx context.Context, network, id string, aliases ...string) error {
	return c.do(ctx, http.MethodPost, "/networks/"+url.PathEscape(network)+"/connect",
		map[string]any{"Container": id, "EndpointConfig": map[string]any{"Aliases": aliases}}, nil)
}

// do sends one request; a 2xx or 304 (already in that state) answer is
// success, and out, if set, receives the JSON body.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("docker %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		return nil
	}
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("docker %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("docker %s %s: %w", method, path, err)
		}
	}
	return nil
}

func trimSlash(s string) string {
	if len(s) > 0 && s[0] == '/' {
		return s[1:]
	}
	return s
}
