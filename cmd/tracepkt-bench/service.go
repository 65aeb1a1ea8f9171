package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// servicePort is where the bench's echo service (RFC 862) listens in its
// namespace, on TCP and UDP: the port the tool probes with --tcp and --udp,
// and the one the TCP and UDP floods go to.
const servicePort = 7

// probeMode is what the tool probes: echoes, or the echo service's port.
type probeMode struct {
	args   []string // the tool's flags selecting it
	marker string   // in the text line of an answered probe; a listener's: in its ready line
	result string   // --json result of an answered probe
	listen bool     // a listener: sends nothing, ready when its stderr says so
}

var (
	echoProbes = probeMode{nil, "reply from", "reply", false}
	tcpProbes  = probeMode{[]string{"--tcp", strconv.Itoa(servicePort)}, "open:", "open", false}
	udpProbes  = probeMode{[]string{"--udp", strconv.Itoa(servicePort)}, "reply:", "reply", false}
	// listenProbes keeps the probes of any run, by the marks every run's
	// probes carry.
	listenProbes = probeMode{[]string{"--listen"}, "tracepkt-perf: listening for the echoes", "", true}
)

// portProbes are the modes that probe the echo service; probeModes are
// every mode, echoes first.
var (
	portProbes = []probeMode{tcpProbes, udpProbes}
	probeModes = slices.Concat([]probeMode{echoProbes}, portProbes)
)

// echoService is the echo service of a namespace: every TCP connection's
// bytes and every UDP datagram sent back.
type echoService struct {
	ln    net.Listener
	pc    net.PacketConn
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// startEchoService listens on servicePort in ns, on every address of both
// families.
func startEchoService(ns *topology.Netns) (*echoService, error) {
	s := &echoService{}
	if err := ns.Do(func() (err error) {
		addr := ":" + strconv.Itoa(servicePort)
		if s.ln, err = net.Listen("tcp", addr); err != nil {
			return err
		}
		if s.pc, err = net.ListenPacket("udp", addr); err != nil {
			s.ln.Close()
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("echo service in %v: %w", ns, err)
	}
	s.wg.Add(2)
	go s.acceptLoop()
	go s.datagrams()
	return s, nil
}

func (s *echoService) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_, _ = io.Copy(c, c)
			c.Close()
		}()
	}
}

func (s *echoService) datagrams() {
	defer s.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = s.pc.WriteTo(buf[:n], from)
	}
}

// close stops the service and waits for its goroutines.
func (s *echoService) close() error {
	err := errors.Join(s.ln.Close(), s.pc.Close())
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// serviceTarget is vethTarget with the echo service running in its
// namespace; close stops both.
func serviceTarget(prefix string) (*topology.VethPairNet, func() error, error) {
	n, closeNet, err := vethTarget(prefix)
	if err != nil {
		return nil, nil, err
	}
	svc, err := startEchoService(n.Netns)
	if err != nil {
		return nil, nil, errors.Join(err, closeNet())
	}
	return n, func() error { return errors.Join(svc.close(), closeNet()) }, nil
}

// floodPayload is the size of one request of the TCP and UDP floods.
const floodPayload = 64

// roundTrips sends n requests of floodPayload bytes to the echo service at
// target over one network ("tcp" or "udp") socket, each after the answer
// to the one before: a flood of packets that are not the tool's.
func roundTrips(network string, target netip.Addr, n int) error {
	c, err := net.DialTimeout(network, netip.AddrPortFrom(target, servicePort).String(), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(120 * time.Second)); err != nil {
		return err
	}
	req, ans := make([]byte, floodPayload), make([]byte, floodPayload)
	for i := range n {
		if _, err := c.Write(req); err != nil {
			return fmt.Errorf("%s round trip %d: %w", network, i, err)
		}
		if _, err := io.ReadFull(c, ans); err != nil {
			return fmt.Errorf("%s round trip %d: %w", network, i, err)
		}
	}
	return nil
}
