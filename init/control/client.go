package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/init/strictjson"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Client talks to PID 1 over the control socket. It is safe for concurrent
// use; requests are serialised on one connection, re-dialled after errors.
type Client struct {
	path string
	mu   sync.Mutex
	conn net.Conn
}

// Dial connects to the control socket at path.
func Dial(path string) (*Client, error) {
	c := &Client{path: path}
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("control: dial %s: %w", path, err)
	}
	c.conn = conn
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// ErrRemote wraps an error reply from PID 1.
var ErrRemote = errors.New("control: request refused")

// RemoteError is PID 1's refusal of a request. Field names the refused
// field when the refusal was about one ("prefix", "local_port").
type RemoteError struct {
	Type    Type
	Field   string
	Reason  string // bundle.Reason of a refused update
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("%v: %v: %s", ErrRemote, e.Type, e.Message)
}

// Unwrap makes every RemoteError an ErrRemote.
func (e *RemoteError) Unwrap() error { return ErrRemote }

// Do sends one request and decodes the reply's data into out (if non-nil).
func (c *Client) Do(ctx context.Context, t Type, req, out any) error {
	var p []byte
	if req != nil {
		var err error
		if p, err = json.Marshal(req); err != nil {
			return fmt.Errorf("control: encode %v: %w", t, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", c.path)
		if err != nil {
			return fmt.Errorf("control: dial %s: %w", c.path, err)
		}
		c.conn = conn
	}
	r, err := c.roundTrip(ctx, t, p)
	if err != nil {
		c.conn.Close()
		c.conn = nil
		return fmt.Errorf("control: %v: %w", t, err)
	}
	if !r.OK {
		return &RemoteError{Type: t, Field: r.Field, Reason: r.Reason, Message: r.Error}
	}
	if out != nil && len(r.Data) > 0 {
		if err := strictjson.Unmarshal(r.Data, out); err != nil {
			return fmt.Errorf("control: decode %v reply: %w", t, err)
		}
	}
	return nil
}

func (c *Client) roundTrip(ctx context.Context, t Type, p []byte) (Reply, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	c.conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := WriteFrame(c.conn, t, p); err != nil {
		return Reply{}, err
	}
	f, err := ReadFrame(c.conn)
	if err != nil {
		return Reply{}, err
	}
	if f.Type != TypeReply {
		return Reply{}, fmt.Errorf("unexpected frame type %v", f.Type)
	}
	var r Reply
	if err := strictjson.Unmarshal(f.Payload, &r); err != nil {
		return Reply{}, fmt.Errorf("bad reply: %w", err)
	}
	return r, nil
}

// Health reports edgepbxd's health.
func (c *Client) Health(ctx context.Context, h Health) error {
	return c.Do(ctx, TypeHealth, h, nil)
}

// Reboot asks PID 1 for an orderly reboot.
func (c *Client) Reboot(ctx context.Context) error { return c.Do(ctx, TypeReboot, nil, nil) }

// Poweroff asks PID 1 for an orderly power off.
func (c *Client) Poweroff(ctx context.Context) error { return c.Do(ctx, TypePoweroff, nil, nil) }

// OpenPinhole opens a media pinhole.
func (c *Client) OpenPinhole(ctx context.Context, p fwspec.Pinhole) error {
	return c.Do(ctx, TypeOpenPinhole, p, nil)
}

// ClosePinhole closes a media pinhole.
func (c *Client) ClosePinhole(ctx context.Context, p fwspec.Pinhole) error {
	return c.Do(ctx, TypeClosePinhole, p, nil)
}

// Ban bans a source prefix.
func (c *Client) Ban(ctx context.Context, b fwspec.Ban) error { return c.Do(ctx, TypeBan, b, nil) }

// Unban lifts a ban.
func (c *Client) Unban(ctx context.Context, p netip.Prefix) error {
	return c.Do(ctx, TypeUnban, UnbanRequest{Prefix: p}, nil)
}

// ListBans returns the active bans.
func (c *Client) ListBans(ctx context.Context) ([]fwspec.Ban, error) {
	var l BanList
	err := c.Do(ctx, TypeListBans, nil, &l)
	return l.Bans, err
}

// Counters returns the firewall's counters.
func (c *Client) Counters(ctx context.Context) (fwspec.Counters, error) {
	var n fwspec.Counters
	err := c.Do(ctx, TypeCounters, nil, &n)
	return n, err
}

// GetPolicy returns the confirmed firewall policy and the pending change.
func (c *Client) GetPolicy(ctx context.Context) (fwspec.PolicyState, error) {
	var st fwspec.PolicyState
	err := c.Do(ctx, TypeGetPolicy, nil, &st)
	return st, err
}

// SetPolicy applies new zones and rules as a pending change; adminSource is
// the address of the admin making it, which must keep admin access.
func (c *Client) SetPolicy(ctx context.Context, a fwspec.Access, adminSource netip.Addr) (fwspec.Pending, error) {
	var p fwspec.Pending
	err := c.Do(ctx, TypeSetPolicy, SetPolicyRequest{Access: a, AdminSource: adminSource}, &p)
	return p, err
}

// ConfirmPolicy makes the pending change permanent.
func (c *Client) ConfirmPolicy(ctx context.Context, id string) error {
	return c.Do(ctx, TypeConfirmPolicy, ConfirmPolicyRequest{ID: id}, nil)
}

// SetDHCPServer asks PID 1 to admit (open) or stop admitting DHCPv4
// requests on a phones interface.
func (c *Client) SetDHCPServer(ctx context.Context, iface string, open bool) error {
	return c.Do(ctx, TypeDHCPServer, fwspec.DHCPServer{Interface: iface, Open: open}, nil)
}
