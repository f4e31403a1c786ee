package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gnolang/gno/tm2/pkg/amino"
	"github.com/gnolang/gno/tm2/pkg/p2p/conn"
)

// mconn-echo: the reference secret connection, then the reference
// MConnection over it with the channels of --channels; every message that
// arrives is sent back on its channel with Send (which waits for queue room).
//
// Output: [LISTEN <addr>] LOCAL <pub> <id>, REMOTE <pub> <id>,
// MCONN started, STATS lines (every --stats-interval and once at the end),
// then either DONE <eof|reset> (exit 0: the peer closed the connection) or
// ERROR <text> (exit 1).
//
// STATS fields: msgs/bytes received, echoed (messages Send accepted),
// queued (echoes still in the send queues), and the Ping/Pong packets seen on
// the plaintext stream in each direction: pings_in/pongs_in were sent by the
// peer, pings_out/pongs_out by the reference.
func runMConnEcho(args []string) error {
	fs := newFlagSet("mconn-echo")
	var ks nodeKeySource
	ks.register(fs)
	def := conn.DefaultMConnConfig()
	listen := fs.String("listen", "", "accept one connection on this loopback address (port 0 picks one)")
	dial := fs.String("dial", "", "dial this loopback address")
	hsTimeout := fs.Duration("handshake-timeout", 10*time.Second, "deadline for TCP connect and the handshake")
	watchdog := fs.Duration("timeout", 120*time.Second, "exit with status 3 after this long (0: never)")
	chans := fs.String("channels", "01:1,02:5,03:10", "channels as HEXID:PRIORITY, comma-separated, in registration order")
	sendQueue := fs.Int("send-queue", 16, "send queue capacity of every channel, in messages")
	recvCap := fs.Int("recv-cap", 4<<20, "receive message capacity of every channel, in bytes")
	recvBuf := fs.Int("recv-buffer", 4096, "initial receive buffer of every channel, in bytes")
	maxPayload := fs.Int("max-payload", def.MaxPacketMsgPayloadSize, "max packet payload, bytes")
	flush := fs.Duration("flush-throttle", def.FlushThrottle, "flush throttle")
	ping := fs.Duration("ping-interval", def.PingInterval, "ping interval")
	pong := fs.Duration("pong-timeout", def.PongTimeout, "pong timeout (must be below the ping interval)")
	sendRate := fs.Int64("send-rate", def.SendRate, "send rate, bytes/s (0: unlimited)")
	recvRate := fs.Int64("recv-rate", def.RecvRate, "receive rate, bytes/s (0: unlimited)")
	assembly := fs.Duration("recv-assembly-timeout", def.RecvAssemblyTimeout, "longest time one message may take to arrive (0: none)")
	recvBudget := fs.Int("max-recv-buffer", def.MaxRecvBufferBytes, "bytes buffered across all channels' partial messages (0: no limit)")
	statsEvery := fs.Duration("stats-interval", 0, "print STATS this often (0: only at the end)")
	verbose := fs.Bool("verbose", false, "the reference's debug log on stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	descs, err := parseChannels(*chans, *sendQueue, *recvBuf, *recvCap)
	if err != nil {
		return err
	}
	if *pong <= 0 || *pong >= *ping {
		// The reference panics on this; say it as a usage error instead.
		return fmt.Errorf("%w: --pong-timeout must be positive and below --ping-interval", errUsage)
	}
	if *maxPayload <= 0 || *flush <= 0 {
		return fmt.Errorf("%w: --max-payload and --flush-throttle must be positive", errUsage)
	}
	cfg := def
	cfg.SendRate = *sendRate
	cfg.RecvRate = *recvRate
	cfg.MaxPacketMsgPayloadSize = *maxPayload
	cfg.FlushThrottle = *flush
	cfg.PingInterval = *ping
	cfg.PongTimeout = *pong
	cfg.RecvAssemblyTimeout = *assembly
	cfg.MaxRecvBufferBytes = *recvBudget

	priv, err := ks.key()
	if err != nil {
		return err
	}
	startWatchdog(*watchdog)

	pubHex, id := idOf(priv)
	tcp, err := openTCP(*listen, *dial, *hsTimeout, func() { record("LOCAL", pubHex, id) })
	if err != nil {
		return err
	}
	defer tcp.Close()

	if err := tcp.SetDeadline(time.Now().Add(*hsTimeout)); err != nil {
		return err
	}
	sc, err := conn.MakeSecretConnection(tcp, priv)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if err := tcp.SetDeadline(time.Time{}); err != nil {
		return err
	}
	rem := sc.RemotePubKey()
	record("REMOTE", hex.EncodeToString(rem[:]), rem.Address().ID())

	e := &echoer{tap: newTapConn(sc), done: make(chan error, 1)}
	e.mc = conn.NewMConnectionWithConfig(e.tap, descs, e.onReceive, e.onError, cfg)
	if *verbose {
		e.mc.SetLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	if err := e.mc.Start(); err != nil {
		return fmt.Errorf("mconn start: %w", err)
	}
	record("MCONN", "started")

	var tick <-chan time.Time
	if *statsEvery > 0 {
		t := time.NewTicker(*statsEvery)
		defer t.Stop()
		tick = t.C
	}
	var cause error
	for cause == nil {
		select {
		case cause = <-e.done:
		case <-tick:
			e.printStats()
		}
	}
	e.mc.Stop()
	e.tap.Close() //nolint: errcheck // closed already by the stop, this waits for a write in progress
	e.printStats()

	switch {
	case errors.Is(cause, io.EOF):
		record("DONE", "eof")
		return nil
	case errors.Is(cause, syscall.ECONNRESET):
		// A peer that closes with bytes still unread (a Ping in flight) resets
		// the connection instead of ending it; that is still the peer closing.
		record("DONE", "reset")
		return nil
	default:
		record("ERROR", oneLine(cause.Error()))
		return cause
	}
}

// parseChannels reads "HEXID:PRIORITY,..." into descriptors that share the
// queue and capacity flags.
func parseChannels(s string, sendQueue, recvBuf, recvCap int) ([]*conn.ChannelDescriptor, error) {
	if sendQueue <= 0 || recvBuf <= 0 || recvCap <= 0 {
		return nil, fmt.Errorf("%w: --send-queue, --recv-buffer and --recv-cap must be positive", errUsage)
	}
	var descs []*conn.ChannelDescriptor
	seen := map[byte]bool{}
	for _, item := range strings.Split(s, ",") {
		idStr, prioStr, ok := strings.Cut(item, ":")
		id, err1 := strconv.ParseUint(idStr, 16, 8)
		prio, err2 := strconv.Atoi(prioStr)
		if !ok || err1 != nil || err2 != nil || prio <= 0 || seen[byte(id)] {
			return nil, fmt.Errorf("%w: bad channel %q in --channels", errUsage, item)
		}
		seen[byte(id)] = true
		descs = append(descs, &conn.ChannelDescriptor{
			ID:                  byte(id),
			Priority:            prio,
			SendQueueCapacity:   sendQueue,
			RecvBufferCapacity:  recvBuf,
			RecvMessageCapacity: recvCap,
		})
	}
	return descs, nil
}

type echoer struct {
	mc     *conn.MConnection
	tap    *tapConn
	done   chan error
	once   sync.Once
	msgs   atomic.Int64
	bytes  atomic.Int64
	echoed atomic.Int64
}

// onReceive runs on the reference's receive routine. The slice is reused by
// the next packet, so the echo gets its own copy (non-nil even when empty).
func (e *echoer) onReceive(ch byte, msg []byte) {
	e.msgs.Add(1)
	e.bytes.Add(int64(len(msg)))
	cp := make([]byte, len(msg))
	copy(cp, msg)
	if !e.mc.Send(ch, cp) {
		if e.mc.IsRunning() {
			e.finish(fmt.Errorf("send on channel %02x failed (queue full past the send timeout)", ch))
		}
		return
	}
	e.echoed.Add(1)
}

func (e *echoer) onError(err error) {
	e.finish(err)
}

func (e *echoer) finish(err error) {
	e.once.Do(func() { e.done <- err })
}

func (e *echoer) printStats() {
	queued := 0
	for _, ch := range e.mc.Status().Channels {
		queued += ch.SendQueueSize
	}
	t := e.tap
	record("STATS",
		"msgs="+strconv.FormatInt(e.msgs.Load(), 10),
		"bytes="+strconv.FormatInt(e.bytes.Load(), 10),
		"echoed="+strconv.FormatInt(e.echoed.Load(), 10),
		"queued="+strconv.Itoa(queued),
		"pings_in="+strconv.FormatInt(t.in.pings.Load(), 10),
		"pongs_in="+strconv.FormatInt(t.in.pongs.Load(), 10),
		"pings_out="+strconv.FormatInt(t.out.pings.Load(), 10),
		"pongs_out="+strconv.FormatInt(t.out.pongs.Load(), 10))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// tapConn passes everything through to the secret connection and counts the
// Ping and Pong packets in each direction of the plaintext stream, which the
// MConnection does not report itself.
type tapConn struct {
	net.Conn
	in, out packetCounter
	writeMu sync.Mutex
	closed  bool
}

func newTapConn(c net.Conn) *tapConn {
	t := &tapConn{Conn: c}
	ping := amino.MustMarshalAny(conn.PacketPing{})
	pong := amino.MustMarshalAny(conn.PacketPong{})
	t.in.ping, t.in.pong = ping, pong
	t.out.ping, t.out.pong = ping, pong
	return t
}

func (t *tapConn) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	t.in.observe(p[:n])
	return n, err
}

// Write and Close share a lock so that the counts are final once Close has
// returned: the last STATS line comes after it, and a Pong the send routine
// was still writing when the peer's close arrived is either counted (it was
// written) or never written.
func (t *tapConn) Write(p []byte) (int, error) {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	if t.closed {
		return 0, net.ErrClosed
	}
	n, err := t.Conn.Write(p)
	t.out.observe(p[:n])
	return n, err
}

// Close closes the connection first, so a write blocked on a peer that
// stopped reading returns, then waits for it to be counted.
func (t *tapConn) Close() error {
	err := t.Conn.Close()
	t.writeMu.Lock()
	t.closed = true
	t.writeMu.Unlock()
	return err
}

// packetCounter follows the sized packets (uvarint length, body) of one
// direction. Bodies no longer than a Ping are kept and compared with the
// encoded Ping and Pong; longer ones are skipped. Each direction is read or
// written by one routine at a time; only the counters are shared.
type packetCounter struct {
	ping, pong []byte
	prefix     uint64 // length being read
	shift      uint
	inBody     bool
	left       uint64 // body bytes still to come
	short      bool   // the body is no longer than a Ping: keep it
	small      []byte // the body so far, when short
	broken     bool   // a prefix over 64 bits: stop following
	pings      atomic.Int64
	pongs      atomic.Int64
}

func (c *packetCounter) observe(p []byte) {
	for len(p) > 0 && !c.broken {
		if !c.inBody {
			b := p[0]
			p = p[1:]
			if c.shift > 63 {
				c.broken = true
				return
			}
			c.prefix |= uint64(b&0x7f) << c.shift
			c.shift += 7
			if b&0x80 != 0 {
				continue
			}
			c.inBody, c.left = true, c.prefix
			c.short = c.prefix <= uint64(len(c.ping))
			c.small = c.small[:0]
			c.prefix, c.shift = 0, 0
		} else {
			n := uint64(len(p))
			if n > c.left {
				n = c.left
			}
			if c.short {
				c.small = append(c.small, p[:n]...)
			}
			c.left -= n
			p = p[n:]
		}
		if c.inBody && c.left == 0 {
			if c.short {
				switch string(c.small) {
				case string(c.ping):
					c.pings.Add(1)
				case string(c.pong):
					c.pongs.Add(1)
				}
			}
			c.inBody = false
		}
	}
}
