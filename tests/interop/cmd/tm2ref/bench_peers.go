package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gnolang/gno/tm2/pkg/bft/version"
	"github.com/gnolang/gno/tm2/pkg/p2p"
	"github.com/gnolang/gno/tm2/pkg/p2p/conn"
	"github.com/gnolang/gno/tm2/pkg/p2p/types"
	"github.com/gnolang/gno/tm2/pkg/versionset"
)

// peer-hub: the reference switch as the hub of the peer benchmarks in
// bench/bench_vs_reference.c (handshakes per second, memory per idle peer,
// broadcast). The C side dials it from another process and reads its
// resident set from /proc; this mode only accepts peers and, on request,
// broadcasts.
//
// The hub registers a node's channel set (hubChannels, the same descriptors
// as bench/peer_driver.c) through one reactor that only counts, and allows
// many peers from one IP (every dialler is on 127.0.0.1).
//
// Output: LISTEN <id>@<ip>:<port> once the switch runs. Commands, one per
// line on stdin:
//
//	stats      STATS peers=N added=A removed=R broadcasts=B warnings=W cpu=C heap=H
//	           (cpu: process user+system seconds; heap: Go heap and stacks in use)
//	broadcast  start calling the switch's Broadcast with --size bytes on
//	           --channel as fast as the peers take it (see broadcastLoop)
//	stop       stop broadcasting
//
// The end of stdin ends the process at once (exit 0): tearing down a
// thousand peers is not what is measured.
func runPeerHub(args []string) error {
	fs := newFlagSet("peer-hub")
	var ks nodeKeySource
	ks.register(fs)
	listen := fs.String("listen", "127.0.0.1:0", "listen on this loopback address (port 0 picks one)")
	chainID := fs.String("chain-id", "bench-chain", "network (chain ID) in the NodeInfo")
	maxIn := fs.Uint64("max-inbound", 4096, "max inbound peers")
	channel := fs.Int("channel", 0x40, "broadcast channel (one of the node's channels)")
	size := fs.Int("size", 256, "broadcast message size")
	inflight := fs.Int("inflight", 64, "Broadcast calls whose per-peer sends may be pending at once")
	watchdog := fs.Duration("timeout", 120*time.Second, "exit with status 3 after this long (0: never)")
	verbose := fs.Bool("verbose", false, "the reference's log on stderr")
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
	if *size <= 0 || *inflight <= 0 || !hasChannel(byte(*channel)) {
		return fmt.Errorf("%w: --size and --inflight must be positive, --channel one of the node's", errUsage)
	}
	startWatchdog(*watchdog)

	nodeKey := types.NodeKey{PrivKey: priv}
	id := nodeKey.ID()
	logs := &countingHandler{verbose: *verbose}
	logger := slog.New(logs)

	vset := version.VersionSet
	vset.Set(versionset.VersionInfo{Name: "app", Version: ""})
	chans := make([]byte, len(hubChannels))
	for i, d := range hubChannels {
		chans[i] = d.ID
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
		Channels:   chans,
		Moniker:    "tm2ref-hub",
		Other:      types.NodeInfoOther{TxIndex: "off"},
	}
	// Rates at their largest (as mconn-bench), so broadcast is not capped
	// at a node's 5 MB/s per peer; everything else is the default.
	mcfg := conn.DefaultMConnConfig()
	mcfg.SendRate = math.MaxInt32
	mcfg.RecvRate = math.MaxInt32
	transport := p2p.NewMultiplexTransport(nodeInfo, nodeKey, mcfg, logger.With("module", "transport"))
	if err := transport.Listen(*self); err != nil {
		return err
	}
	self.Port = transport.NetAddress().Port

	r := &hubReactor{}
	r.BaseReactor = *p2p.NewBaseReactor("bench", r)
	r.SetLogger(logger.With("module", "bench"))
	sw := p2p.NewMultiplexSwitch(transport,
		p2p.WithMaxInboundPeers(*maxIn),
		p2p.WithAllowDuplicateIP(true),
		p2p.WithReactor("bench", r))
	sw.SetLogger(logger.With("module", "switch"))
	if err := sw.Start(); err != nil {
		return err
	}
	record("LISTEN", self.String())

	msg := make([]byte, *size)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	var stop, stopped chan struct{}
	stopBroadcast := func() {
		if stop != nil {
			close(stop)
			<-stopped
			stop = nil
		}
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch strings.TrimSpace(in.Text()) {
		case "stats":
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			record("STATS",
				"peers="+strconv.Itoa(len(sw.Peers().List())),
				"added="+strconv.FormatInt(r.added.Load(), 10),
				"removed="+strconv.FormatInt(r.removed.Load(), 10),
				"broadcasts="+strconv.FormatInt(r.broadcasts.Load(), 10),
				"warnings="+strconv.FormatInt(logs.warnings.Load(), 10),
				"cpu="+strconv.FormatFloat(now().cpu, 'f', 6, 64),
				"heap="+strconv.FormatUint(ms.HeapInuse+ms.StackInuse, 10))
		case "broadcast":
			if stop == nil {
				stop, stopped = make(chan struct{}), make(chan struct{})
				go func(stop, stopped chan struct{}) {
					defer close(stopped)
					broadcastLoop(stop, sw, byte(*channel), msg, *inflight, &r.broadcasts)
				}(stop, stopped)
			}
		case "stop":
			stopBroadcast()
		case "":
		default:
			return fmt.Errorf("%w: unknown command %q", errUsage, in.Text())
		}
	}
	os.Exit(0)
	return nil
}

// broadcastLoop calls the switch's Broadcast back to back. Broadcast never
// waits: it starts one goroutine per peer, each waiting in Send for room in
// that peer's queue. Unchecked, the loop would pile up goroutines far
// faster than the connections drain them, so it lets at most inflight
// Broadcasts' worth of those goroutines exist at once and otherwise naps
// briefly (the same bound a caller of a node's Broadcast must apply).
func broadcastLoop(stop <-chan struct{}, sw *p2p.MultiplexSwitch, ch byte, msg []byte, inflight int, count *atomic.Int64) {
	peers := len(sw.Peers().List())
	limit := runtime.NumGoroutine() + inflight*peers
	for {
		select {
		case <-stop:
			return
		default:
		}
		sw.Broadcast(ch, msg)
		count.Add(1)
		for runtime.NumGoroutine() > limit {
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// hubChannels is a node's channel set (mempool, blockchain, four consensus,
// discovery), with the descriptors bench/peer_driver.c registers.
var hubChannels = []*conn.ChannelDescriptor{
	{ID: 0x30, Priority: 5, SendQueueCapacity: 0, RecvBufferCapacity: 4096, RecvMessageCapacity: 22020096},
	{ID: 0x40, Priority: 10, SendQueueCapacity: 1000, RecvBufferCapacity: 204800, RecvMessageCapacity: 104857605},
	{ID: 0x20, Priority: 5, SendQueueCapacity: 100, RecvBufferCapacity: 4096, RecvMessageCapacity: 1048576},
	{ID: 0x21, Priority: 10, SendQueueCapacity: 100, RecvBufferCapacity: 204800, RecvMessageCapacity: 1048576},
	{ID: 0x22, Priority: 5, SendQueueCapacity: 100, RecvBufferCapacity: 10000, RecvMessageCapacity: 1048576},
	{ID: 0x23, Priority: 1, SendQueueCapacity: 2, RecvBufferCapacity: 1024, RecvMessageCapacity: 1048576},
	{ID: 0x50, Priority: 1, SendQueueCapacity: 20, RecvBufferCapacity: 4096, RecvMessageCapacity: 5242880},
}

func hasChannel(id byte) bool {
	for _, d := range hubChannels {
		if d.ID == id {
			return true
		}
	}
	return false
}

// hubReactor owns every channel of the hub and only counts.
type hubReactor struct {
	p2p.BaseReactor
	added, removed, broadcasts atomic.Int64
}

func (r *hubReactor) GetChannels() []*conn.ChannelDescriptor { return hubChannels }
func (r *hubReactor) AddPeer(p2p.PeerConn)                   { r.added.Add(1) }
func (r *hubReactor) RemovePeer(p2p.PeerConn, any)           { r.removed.Add(1) }
func (r *hubReactor) Receive(byte, p2p.PeerConn, []byte)     {}

// countingHandler counts the reference's warnings and errors (a dropped
// connection, a failed broadcast) for STATS; with --verbose it also prints
// every record. Lower levels are off: the hub should not pay for logs the
// benchmark never reads.
type countingHandler struct {
	verbose  bool
	warnings atomic.Int64
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.verbose || l >= slog.LevelWarn
}

func (h *countingHandler) Handle(_ context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelWarn {
		h.warnings.Add(1)
	}
	if h.verbose {
		fmt.Fprintln(os.Stderr, rec.Level, rec.Message)
	}
	return nil
}

func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
