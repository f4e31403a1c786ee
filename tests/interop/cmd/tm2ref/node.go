package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/gnolang/gno/tm2/pkg/bft/version"
	"github.com/gnolang/gno/tm2/pkg/p2p"
	"github.com/gnolang/gno/tm2/pkg/p2p/conn"
	"github.com/gnolang/gno/tm2/pkg/p2p/discovery"
	"github.com/gnolang/gno/tm2/pkg/p2p/events"
	"github.com/gnolang/gno/tm2/pkg/p2p/types"
	"github.com/gnolang/gno/tm2/pkg/versionset"
)

// testChannel is the channel of the harness's echo reactor.
const testChannel = byte(0x70)

var echoPrefix = []byte("echo ")

// node: the reference's whole p2p stack, put together the way a gno.land
// node (tm2/pkg/bft/node) does: MultiplexTransport with a NodeInfo built
// like makeNodeInfo, MultiplexSwitch, and the discovery reactor with its
// store; plus an echo reactor on 0x70 instead of the consensus reactors.
//
// Output: LISTEN <id>@<ip>:<port> once the switch runs; then, as they
// happen, PEER_CONNECTED <id> <addr> <in|out|->, PEER_DISCONNECTED <id> <reason>,
// RECV 0x70 <len> <from id> (the echo reactor greets every new peer with
// "hello <our id>" and answers "echo " + each message), REJECTED <reason> (an inbound connection the
// transport refused), DIAL_FAILED <addr> <reason> (also for a dialled
// connection the switch then refused), and PEERS <n>
// <id>:<in|out>... every --peers-interval and at once on SIGUSR1. With
// --dial-on-signal the --dial list is handed to DialPeers on each SIGUSR2
// rather than at start (DIAL_QUEUED <n> once it returned; DIAL_SKIPPED
// <addr> for an address whose peer is connected then or when its dial runs). Runs until SIGTERM/SIGINT (DONE, exit 0) or the watchdog.
func runNode(args []string) error {
	fs := newFlagSet("node")
	var ks nodeKeySource
	ks.register(fs)
	listen := fs.String("listen", "127.0.0.1:0", "listen on this loopback address (port 0 picks one)")
	chainID := fs.String("chain-id", "tm2-interop", "network (chain ID) in the NodeInfo")
	moniker := fs.String("moniker", "tm2ref", "moniker in the NodeInfo")
	appVersion := fs.String("app-version", "", "version of the NodeInfo's \"app\" entry (gno.land sends \"\")")
	persistent := fs.String("persistent-peers", "", "ID@ip:port,... kept connected (WithPersistentPeers)")
	dialList := fs.String("dial", "", "ID@ip:port,... handed to DialPeers once the switch runs")
	dialOnSignal := fs.Bool("dial-on-signal", false, "hand --dial to DialPeers on each SIGUSR2 instead of at start")
	seeds := fs.String("seeds", "", "ID@ip:port,... bootstrap peers (WithSeeds)")
	private := fs.String("private-peers", "", "IDs never shared by discovery")
	maxIn := fs.Uint64("max-inbound", 40, "max inbound peers")
	maxOut := fs.Uint64("max-outbound", 10, "max outbound peers")
	pex := fs.Bool("pex", true, "run the discovery reactor (channel 0x50)")
	interval := fs.Duration("discovery-interval", 3*time.Second, "discovery request interval (WithDiscoveryInterval)")
	addrBook := fs.String("addrbook", "", "discovery store file (default: a temporary file, removed at exit)")
	dupIP := fs.Bool("allow-duplicate-ip", true, "WithAllowDuplicateIP: needed on loopback, where every peer shares one IP")
	echo := fs.Bool("echo", true, "answer every 0x70 message but echoes with \"echo \" + the message")
	greet := fs.Bool("greet", true, "send \"hello <our id>\" on 0x70 to every new peer")
	peersEvery := fs.Duration("peers-interval", time.Second, "print PEERS this often (0: never)")
	flush := fs.Duration("flush-throttle", 10*time.Millisecond, "MConnection flush throttle")
	watchdog := fs.Duration("timeout", 120*time.Second, "exit with status 3 after this long (0: never)")
	verbose := fs.Bool("verbose", false, "the reference's debug log on stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	priv, err := ks.key()
	if err != nil {
		return err
	}
	if err := loopbackOnly(*listen); err != nil {
		return err
	}
	persistentAddrs, err := parseAddrList(*persistent)
	if err != nil {
		return err
	}
	dialAddrs, err := parseAddrList(*dialList)
	if err != nil {
		return err
	}
	seedAddrs, err := parseAddrList(*seeds)
	if err != nil {
		return err
	}
	privateIDs, errs := types.NewIDFromStrings(splitList(*private))
	if len(errs) > 0 {
		return fmt.Errorf("%w: --private-peers: %v", errUsage, errs[0])
	}
	if *interval <= 0 {
		return fmt.Errorf("%w: --discovery-interval must be positive", errUsage)
	}
	startWatchdog(*watchdog)

	nodeKey := types.NodeKey{PrivKey: priv}
	id := nodeKey.ID()
	logger := slog.New(&reportHandler{verbose: *verbose})

	// The NodeInfo as makeNodeInfo (tm2/pkg/bft/node) builds it: the bft
	// VersionSet plus "app", the Tendermint version, the node's channels
	// with 0x50 appended when discovery runs, TxIndex "off" (no indexer)
	// and an RPC address.
	vset := version.VersionSet
	vset.Set(versionset.VersionInfo{Name: "app", Version: *appVersion})
	channels := []byte{testChannel}
	if *pex {
		channels = append(channels, discovery.Channel)
	}
	self, err := types.NewNetAddressFromString(types.NetAddressString(id, *listen))
	if err != nil {
		return fmt.Errorf("%w: --listen: %v", errUsage, err)
	}
	nodeInfo := types.NodeInfo{
		VersionSet: vset,
		NetAddress: self,
		Network:    *chainID,
		Version:    version.Version,
		Channels:   channels,
		Moniker:    *moniker,
		Other:      types.NodeInfoOther{TxIndex: "off", RPCAddress: "tcp://127.0.0.1:26657"},
	}
	mcfg := conn.DefaultMConnConfig()
	mcfg.FlushThrottle = *flush
	transport := p2p.NewMultiplexTransport(nodeInfo, nodeKey, mcfg, logger.With("module", "transport"))
	if err := transport.Listen(*self); err != nil {
		return err
	}
	defer transport.Close()
	// A gno.land node listening on port 0 would advertise port 0. The
	// harness advertises the port it got instead, so discovery can pass it
	// on: the NodeInfo the transport holds shares this NetAddress, and no
	// peer can connect before LISTEN is printed.
	self.Port = transport.NetAddress().Port

	reactors := []p2p.SwitchOption{}
	var disc *discovery.Reactor
	if *pex {
		bookPath := *addrBook
		if bookPath == "" {
			dir, err := os.MkdirTemp("", "tm2ref-node-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			bookPath = filepath.Join(dir, "addrbook.json")
		}
		store, err := discovery.NewStore(bookPath, *self, discovery.WithLogger(logger.With("module", "discovery")))
		if err != nil {
			return err
		}
		disc = discovery.NewReactor(store, discovery.WithDiscoveryInterval(*interval))
		disc.SetLogger(logger.With("module", "discovery"))
		reactors = append(reactors, p2p.WithReactor("discovery", disc))
	}
	echoR := newEchoReactor(id, *echo, *greet)
	echoR.SetLogger(logger.With("module", "echo"))
	reactors = append(reactors, p2p.WithReactor("echo", echoR))

	opts := append([]p2p.SwitchOption{
		p2p.WithPersistentPeers(persistentAddrs),
		p2p.WithSeeds(seedAddrs),
		p2p.WithPrivatePeers(privateIDs),
		p2p.WithMaxInboundPeers(*maxIn),
		p2p.WithMaxOutboundPeers(*maxOut),
		p2p.WithAllowDuplicateIP(*dupIP),
	}, reactors...)
	sw := p2p.NewMultiplexSwitch(transport, opts...)
	sw.SetLogger(logger.With("module", "switch"))

	evCh, unsub := sw.Subscribe(func(events.Event) bool { return true })
	defer unsub()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evDone := make(chan struct{})
	go func() {
		defer close(evDone)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-evCh:
				switch e := ev.(type) {
				case events.PeerConnectedEvent:
					// The direction of the connection the peer set holds
					// now ("-" if it is already gone); v1.7.1 announces a
					// connection replacing another in a simultaneous open
					// as a second connect.
					dir := "-"
					if p := sw.Peers().Get(e.PeerID); p != nil {
						dir = direction(p.IsOutbound())
					}
					record("PEER_CONNECTED", e.PeerID, addrString(e.Address), dir)
				case events.PeerDisconnectedEvent:
					reason := "nil"
					if e.Reason != nil {
						reason = oneLine(e.Reason.Error())
					}
					record("PEER_DISCONNECTED", e.PeerID, reason)
				}
			}
		}
	}()

	// Signals are caught before anything is printed: a SIGUSR1 or SIGUSR2
	// sent in answer to a line must never meet the default action (exit).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	dump := make(chan os.Signal, 1)
	signal.Notify(dump, syscall.SIGUSR1)
	trigger := make(chan os.Signal, 1)
	signal.Notify(trigger, syscall.SIGUSR2)

	if err := sw.Start(); err != nil {
		return err
	}
	record("LISTEN", self.String())
	if len(dialAddrs) > 0 && !*dialOnSignal {
		sw.DialPeers(dialAddrs...)
	}
	var tick <-chan time.Time
	if *peersEvery > 0 {
		t := time.NewTicker(*peersEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-sig:
			if err := sw.Stop(); err != nil {
				return err
			}
			cancel()
			<-evDone
			record("DONE")
			return nil
		case <-tick:
			printPeers(sw)
		case <-dump:
			printPeers(sw)
		case <-trigger:
			if *dialOnSignal && len(dialAddrs) > 0 {
				// DialPeers drops connected peers silently; say so.
				for _, a := range dialAddrs {
					if sw.Peers().Has(a.ID) {
						record("DIAL_SKIPPED", a.String(), "already connected")
					}
				}
				sw.DialPeers(dialAddrs...)
				record("DIAL_QUEUED", len(dialAddrs))
			}
		}
	}
}

func direction(outbound bool) string {
	if outbound {
		return "out"
	}
	return "in"
}

// printPeers prints PEERS <n> <id>:<in|out>..., sorted.
func printPeers(sw *p2p.MultiplexSwitch) {
	list := sw.Peers().List()
	ids := make([]string, 0, len(list))
	for _, p := range list {
		ids = append(ids, p.ID().String()+":"+direction(p.IsOutbound()))
	}
	sort.Strings(ids)
	record("PEERS", append([]any{len(ids)}, toAny(ids)...)...)
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func addrString(a interface{ String() string }) string {
	if a == nil {
		return "-"
	}
	return a.String()
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseAddrList parses ID@ip:port,... and refuses anything off loopback.
func parseAddrList(s string) ([]*types.NetAddress, error) {
	var out []*types.NetAddress
	for _, f := range splitList(s) {
		at := strings.LastIndexByte(f, '@')
		if at < 0 {
			return nil, fmt.Errorf("%w: %q has no ID", errUsage, f)
		}
		if err := loopbackOnly(f[at+1:]); err != nil {
			return nil, err
		}
		a, err := types.NewNetAddressFromString(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", errUsage, f, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// echoReactor owns channel 0x70: it reports every message, optionally
// answers it with "echo " + the message (never answering an echo, so two
// harness nodes do not loop), and optionally greets each new peer.
type echoReactor struct {
	p2p.BaseReactor
	hello []byte
	echo  bool
	greet bool
}

func newEchoReactor(id types.ID, echo, greet bool) *echoReactor {
	r := &echoReactor{hello: []byte("hello " + id.String()), echo: echo, greet: greet}
	r.BaseReactor = *p2p.NewBaseReactor("echo", r)
	return r
}

func (r *echoReactor) GetChannels() []*conn.ChannelDescriptor {
	return []*conn.ChannelDescriptor{{
		ID: testChannel, Priority: 5, SendQueueCapacity: 64, RecvMessageCapacity: 1 << 20,
	}}
}

func (r *echoReactor) AddPeer(peer p2p.PeerConn) {
	if r.greet {
		// Send may wait up to 10 s for queue room; never on the switch's path.
		go peer.Send(testChannel, r.hello)
	}
}

func (r *echoReactor) Receive(chID byte, peer p2p.PeerConn, msg []byte) {
	record("RECV", fmt.Sprintf("0x%02x", chID), len(msg), peer.ID())
	if r.echo && !bytes.HasPrefix(msg, echoPrefix) {
		cp := append(append([]byte(nil), echoPrefix...), msg...)
		go peer.Send(chID, cp)
	}
}

// reportHandler turns the reference's log records that explain why a
// connection never became a peer into REJECTED / DIAL_FAILED lines (the
// switch has no event for them), and passes everything to stderr with
// --verbose.
type reportHandler struct {
	verbose bool
	attrs   []slog.Attr
}

// Enabled lets debug records through too: one of them is reported (a queued
// dial skipped because the peer connected meanwhile); the others are
// dropped unless --verbose.
func (h *reportHandler) Enabled(context.Context, slog.Level) bool {
	return true
}

func (h *reportHandler) Handle(_ context.Context, rec slog.Record) error {
	var errText, peer, peerAddr string
	visit := func(a slog.Attr) bool {
		switch a.Key {
		case "err":
			errText = oneLine(a.Value.String())
		case "peer":
			peer = oneLine(a.Value.String())
			if c, ok := a.Value.Any().(interface{ SocketAddr() *types.NetAddress }); ok {
				peerAddr = c.SocketAddr().String()
			}
		}
		return true
	}
	for _, a := range h.attrs {
		visit(a)
	}
	rec.Attrs(visit)
	switch rec.Message {
	case "unable to process p2p connection":
		record("REJECTED", errText)
	case "unable to dial peer":
		record("DIAL_FAILED", peer, errText)
	case "unable to add peer":
		// Only the dial loop logs it: the switch refused a connection it
		// dialled. Its own outbound lost a simultaneous open, or the far end
		// closed it while it was being added, which leaves no other trace (no
		// connect, no disconnect: the peer set held it only in between).
		record("DIAL_FAILED", peerAddr, errText)
	case "skipping dial, peer already connected":
		record("DIAL_SKIPPED", attrValue(h.attrs, rec, "address"), "already connected")
	case "Ignoring inbound connection: error while adding peer":
		record("REJECTED", errText)
	default:
		// The switch's own refusals (peer limit, duplicate ID, duplicate
		// IP) carry their reason in the message.
		if r, ok := strings.CutPrefix(rec.Message, "Ignoring inbound connection: "); ok {
			record("REJECTED", r, attrValue(h.attrs, rec, "id"))
		}
	}
	if h.verbose {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
		for _, a := range h.attrs {
			fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
		}
		rec.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
			return true
		})
		fmt.Fprintln(os.Stderr, b.String())
	}
	return nil
}

// attrValue is the record's attribute key ("-" without one).
func attrValue(attrs []slog.Attr, rec slog.Record, key string) string {
	v := "-"
	for _, a := range attrs {
		if a.Key == key {
			v = a.Value.String()
		}
	}
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
		}
		return true
	})
	return v
}

func (h *reportHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &n
}

func (h *reportHandler) WithGroup(string) slog.Handler { return h }
