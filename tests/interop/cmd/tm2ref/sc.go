package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gnolang/gno/tm2/pkg/p2p/conn"
)

// benchNet is 198.18.0.0/15 (RFC 2544, benchmarking): the namespace tests
// give their nodes addresses from it, inside namespaces they create.
var benchNet = &net.IPNet{IP: net.IPv4(198, 18, 0, 0), Mask: net.CIDRMask(15, 32)}

// loopbackOnly rejects any address that is neither loopback nor in benchNet,
// so the harness can never reach out of the machine.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: bad address %q: %v", errUsage, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !(ip.IsLoopback() || benchNet.Contains(ip)) {
		return fmt.Errorf("%w: %q is neither loopback nor in 198.18.0.0/15", errUsage, addr)
	}
	return nil
}

// openTCP returns one TCP connection: the first accepted on --listen, or the
// result of dialling --dial. ready runs once the listener is up (after the
// LISTEN line) or before dialling, so a test can read everything it needs
// before it connects.
func openTCP(listen, dial string, timeout time.Duration, ready func()) (*net.TCPConn, error) {
	switch {
	case (listen == "") == (dial == ""):
		return nil, fmt.Errorf("%w: exactly one of --listen or --dial is required", errUsage)
	case listen != "":
		if err := loopbackOnly(listen); err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		record("LISTEN", ln.Addr().String())
		ready()
		c, err := ln.Accept()
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	default:
		if err := loopbackOnly(dial); err != nil {
			return nil, err
		}
		ready()
		c, err := net.DialTimeout("tcp", dial, timeout)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
}

// sc-echo: one reference secret connection; everything received is sent
// back. When the peer ends its stream (half or full close) at a frame
// boundary, the write side is shut too and the process exits 0.
//
// Output: [LISTEN <addr>] LOCAL <pub> <id>, REMOTE <pub> <id>, DONE <bytes>.
func runSCEcho(args []string) error {
	fs := newFlagSet("sc-echo")
	var ks nodeKeySource
	ks.register(fs)
	listen := fs.String("listen", "", "accept one connection on this loopback address (port 0 picks one)")
	dial := fs.String("dial", "", "dial this loopback address")
	hsTimeout := fs.Duration("handshake-timeout", 10*time.Second, "deadline for TCP connect and the handshake")
	watchdog := fs.Duration("timeout", 120*time.Second, "exit with status 3 after this long (0: never)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
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

	n, err := echo(sc)
	if err != nil {
		return fmt.Errorf("echo after %d bytes: %w", n, err)
	}
	if err := tcp.CloseWrite(); err != nil {
		return err
	}
	record("DONE", n)
	return nil
}

// echo copies sc back into itself until a clean EOF at a frame boundary.
func echo(sc *conn.SecretConnection) (int64, error) {
	buf := make([]byte, 64*1024)
	var total int64
	for {
		n, err := sc.Read(buf)
		if n > 0 {
			if _, werr := sc.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
