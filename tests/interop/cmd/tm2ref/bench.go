package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gnolang/gno/tm2/pkg/p2p/conn"
)

// The throughput modes measure the reference between two loopback
// endpoints, either two tm2ref processes or tm2ref and tm2p2p
// (bench/bench_vs_reference.c). One side sends --count messages (or writes)
// of --size bytes as fast as the reference accepts them; the other counts
// them. Both print, when done,
//
//	RESULT msgs=N bytes=B secs=T cpu=C
//
// where secs runs from the first message received to the last (receiver) or
// from the first Send to the peer closing (sender), and cpu is the process's
// user plus system CPU seconds over the same span. The receiver exits once
// all have arrived, which closes the connection; that ends the sender.

// benchFlags are the flags both throughput modes share.
type benchFlags struct {
	ks        nodeKeySource
	listen    *string
	dial      *string
	role      *string
	count     *int64
	size      *int
	hsTimeout *time.Duration
	watchdog  *time.Duration
}

func (b *benchFlags) register(name string, args []string, extra func(fs *flag.FlagSet)) error {
	fs := newFlagSet(name)
	b.ks.register(fs)
	b.listen = fs.String("listen", "", "accept one connection on this loopback address (port 0 picks one)")
	b.dial = fs.String("dial", "", "dial this loopback address")
	b.role = fs.String("role", "", "sender or receiver")
	b.count = fs.Int64("count", 0, "messages (mconn-bench) or writes (sc-bench) to send")
	b.size = fs.Int("size", 0, "bytes per message or write")
	b.hsTimeout = fs.Duration("handshake-timeout", 10*time.Second, "deadline for TCP connect and the handshake")
	b.watchdog = fs.Duration("timeout", 120*time.Second, "exit with status 3 after this long (0: never)")
	if extra != nil {
		extra(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *b.role != "sender" && *b.role != "receiver" {
		return fmt.Errorf("%w: --role must be sender or receiver", errUsage)
	}
	if *b.count <= 0 || *b.size <= 0 {
		return fmt.Errorf("%w: --count and --size must be positive", errUsage)
	}
	return nil
}

// secretConn runs the handshake on the connection of --listen or --dial.
func (b *benchFlags) secretConn() (*net.TCPConn, *conn.SecretConnection, error) {
	priv, err := b.ks.key()
	if err != nil {
		return nil, nil, err
	}
	startWatchdog(*b.watchdog)
	pubHex, id := idOf(priv)
	tcp, err := openTCP(*b.listen, *b.dial, *b.hsTimeout, func() { record("LOCAL", pubHex, id) })
	if err != nil {
		return nil, nil, err
	}
	if err := tcp.SetDeadline(time.Now().Add(*b.hsTimeout)); err != nil {
		tcp.Close()
		return nil, nil, err
	}
	sc, err := conn.MakeSecretConnection(tcp, priv)
	if err != nil {
		tcp.Close()
		return nil, nil, fmt.Errorf("handshake: %w", err)
	}
	if err := tcp.SetDeadline(time.Time{}); err != nil {
		tcp.Close()
		return nil, nil, err
	}
	rem := sc.RemotePubKey()
	record("REMOTE", hex.EncodeToString(rem[:]), rem.Address().ID())
	return tcp, sc, nil
}

// mark is a point in wall and process CPU time.
type mark struct {
	wall time.Time
	cpu  float64
}

func now() mark {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)*1e-6 }
	return mark{time.Now(), tv(ru.Utime) + tv(ru.Stime)}
}

func printResult(msgs, bytes int64, from, to mark) {
	record("RESULT",
		"msgs="+strconv.FormatInt(msgs, 10),
		"bytes="+strconv.FormatInt(bytes, 10),
		"secs="+strconv.FormatFloat(to.wall.Sub(from.wall).Seconds(), 'f', 6, 64),
		"cpu="+strconv.FormatFloat(to.cpu-from.cpu, 'f', 6, 64))
}

// peerClosed reports whether err is the peer ending the connection.
func peerClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// benchChannel is the one channel of mconn-bench.
const benchChannel = 0x01

// mconn-bench: the reference MConnection over the reference secret
// connection, one channel, rate limits effectively off (the largest rates
// rather than 0, so the rate monitor runs as on a configured node).
func runMConnBench(args []string) error {
	var b benchFlags
	def := conn.DefaultMConnConfig()
	var sendQueue, recvCap *int
	var flush *time.Duration
	err := b.register("mconn-bench", args, func(fs *flag.FlagSet) {
		sendQueue = fs.Int("send-queue", 1000, "send queue capacity, in messages")
		recvCap = fs.Int("recv-cap", 4<<20, "receive message capacity, in bytes")
		flush = fs.Duration("flush-throttle", def.FlushThrottle, "flush throttle")
	})
	if err != nil {
		return err
	}
	if *sendQueue <= 0 || *recvCap < *b.size || *flush <= 0 {
		return fmt.Errorf("%w: --send-queue and --flush-throttle must be positive and --recv-cap at least --size", errUsage)
	}
	cfg := def
	cfg.SendRate = math.MaxInt32
	cfg.RecvRate = math.MaxInt32
	cfg.FlushThrottle = *flush
	descs := []*conn.ChannelDescriptor{{
		ID:                  benchChannel,
		Priority:            1,
		SendQueueCapacity:   *sendQueue,
		RecvBufferCapacity:  4096,
		RecvMessageCapacity: *recvCap,
	}}

	tcp, sc, err := b.secretConn()
	if err != nil {
		return err
	}
	defer tcp.Close()

	n := *b.count
	var (
		msgs, bytes atomic.Int64
		first, last mark
		done        = make(chan error, 1)
		once        sync.Once
	)
	finish := func(err error) { once.Do(func() { done <- err }) }
	onReceive := func(_ byte, msg []byte) {
		if msgs.Load() == 0 {
			first = now()
		}
		bytes.Add(int64(len(msg)))
		if msgs.Add(1) == n {
			last = now()
			finish(nil)
		}
	}
	mc := conn.NewMConnectionWithConfig(sc, descs, onReceive, finish, cfg)
	if err := mc.Start(); err != nil {
		return fmt.Errorf("mconn start: %w", err)
	}
	record("MCONN", "started")

	if *b.role == "receiver" {
		err := <-done
		mc.Stop()
		if err != nil {
			return fmt.Errorf("after %d of %d messages: %w", msgs.Load(), n, err)
		}
		printResult(n, bytes.Load(), first, last)
		return nil
	}

	// Every Send queues the same slice, as a broadcast does; the reference
	// only reads it.
	msg := make([]byte, *b.size)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	start := now()
	for i := int64(0); i < n; i++ {
		if !mc.Send(benchChannel, msg) {
			select {
			case err := <-done:
				return fmt.Errorf("send %d of %d: %w", i, n, err)
			default:
				return fmt.Errorf("send %d of %d: queue full past the send timeout", i, n)
			}
		}
	}
	err = <-done
	end := now()
	mc.Stop()
	if err != nil && !peerClosed(err) {
		return err
	}
	printResult(n, n*int64(*b.size), start, end)
	return nil
}

// sc-bench: the bare reference secret connection. The sender makes --count
// writes of --size bytes; the receiver reads until all those bytes arrived.
func runSCBench(args []string) error {
	var b benchFlags
	if err := b.register("sc-bench", args, nil); err != nil {
		return err
	}
	tcp, sc, err := b.secretConn()
	if err != nil {
		return err
	}
	defer tcp.Close()
	n := *b.count
	total := n * int64(*b.size)

	if *b.role == "receiver" {
		buf := make([]byte, 64*1024)
		var got int64
		var first mark
		for got < total {
			k, err := sc.Read(buf)
			if k > 0 && got == 0 {
				first = now()
			}
			got += int64(k)
			if err != nil && got < total {
				return fmt.Errorf("after %d of %d bytes: %w", got, total, err)
			}
		}
		printResult(n, got, first, now())
		return nil
	}

	chunk := make([]byte, *b.size)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	start := now()
	for i := int64(0); i < n; i++ {
		if _, err := sc.Write(chunk); err != nil {
			return fmt.Errorf("write %d of %d: %w", i, n, err)
		}
	}
	// The receiver closes once it has everything.
	if _, err := sc.Read(make([]byte, 1024)); err != nil && !peerClosed(err) {
		return err
	}
	printResult(n, total, start, now())
	return nil
}
