package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Pod networking, as a CNI plugin with routed veths does it (Calico's layout):
//
//   - every pod that is not hostNetwork gets its own network namespace, with its own loopback
//     and one interface, eth0, holding the pod's address as a /32;
//   - the other end of eth0 stays on the host, holds the gateway address 169.254.1.1 (the same
//     on every pod's veth) and the host routes the pod's address to it; with forwarding on,
//     pods reach each other, the host reaches them, and they reach the host;
//   - the API server, which listens on the host's 127.0.0.1, is reached from pods at the
//     `kubernetes` Service's address (10.96.0.1, on the host's loopback device) through a small
//     TCP relay, so in-cluster configuration works as on any cluster.
//
// A program in a pod therefore sees what it would see on a real node: binding 127.0.0.1 or
// 0.0.0.0 is private to the pod, and `kubectl port-forward` reaches the pod's own loopback.

const podGateway = "169.254.1.1"

// netnsName is the network namespace of the pod with address ip (under /var/run/netns).
func netnsName(ip string) string { return "strand-" + ip }

// hostVeth is the host end of the pod's veth pair: "sv" and the address in hex (15 bytes at most).
func hostVeth(ip string) string {
	parsed := net.ParseIP(ip).To4()
	if parsed == nil {
		return "sv-bad"
	}
	return fmt.Sprintf("sv%02x%02x%02x%02x", parsed[0], parsed[1], parsed[2], parsed[3])
}

func netnsPath(ip string) string { return filepath.Join("/var/run/netns", netnsName(ip)) }

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupHostNetwork turns forwarding on, puts the API address on the loopback device and starts
// the relay to the API server. It runs once, at start.
func (n *Node) setupHostNetwork(ctx context.Context) error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable forwarding (the process node needs root): %w", err)
	}
	// One neighbour entry per pod on the host: the kernel's default table (gc_thresh3 = 1024)
	// overflows near a thousand pods and drops their packets. Raised, never lowered.
	for name, want := range map[string]int{"gc_thresh1": 4096, "gc_thresh2": 16384, "gc_thresh3": 32768} {
		path := "/proc/sys/net/ipv4/neigh/default/" + name
		if b, err := os.ReadFile(path); err == nil {
			if have, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && have >= want {
				continue
			}
		}
		if err := os.WriteFile(path, []byte(strconv.Itoa(want)), 0o644); err != nil {
			return fmt.Errorf("neighbour table size: %w", err)
		}
	}
	out, err := exec.Command("ip", "addr", "add", n.apiHost+"/32", "dev", "lo").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "File exists") && !strings.Contains(string(out), "already assigned") {
		return fmt.Errorf("API address %s on lo: %v: %s", n.apiHost, err, strings.TrimSpace(string(out)))
	}
	l, err := net.Listen("tcp", net.JoinHostPort(n.apiHost, n.apiPort))
	if err != nil {
		return fmt.Errorf("API relay: %w", err)
	}
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	go relay(l, net.JoinHostPort("127.0.0.1", n.apiPort))
	return nil
}

// relay copies every connection accepted on l to target and back, until l is closed.
func relay(l net.Listener, target string) {
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of descriptors and the like: pods must not lose the API server for good.
			log.Printf("API relay: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				log.Printf("API relay: %v", err)
				return
			}
			defer up.Close()
			splice(c, up)
		}()
	}
}

// splice copies a to b and b to a until both directions end; when one direction's reader
// ends, the other side's write end is closed (half-close where the connection has one).
func splice(a, b io.ReadWriter) error {
	closeWrite := func(w io.Writer) {
		switch c := w.(type) {
		case interface{ CloseWrite() error }:
			_ = c.CloseWrite()
		case io.Closer:
			_ = c.Close()
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(b, a)
		closeWrite(b)
	}()
	_, err := io.Copy(a, b)
	closeWrite(a)
	wg.Wait()
	return err
}

// setupPodNetwork makes the pod's namespace, its veth pair, addresses and routes. A namespace
// left by an earlier run of the node for the same address is removed first.
func setupPodNetwork(ip string) error {
	teardownPodNetwork(ip)
	ns, veth := netnsName(ip), hostVeth(ip)
	steps := [][]string{
		{"netns", "add", ns},
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"addr", "add", podGateway + "/32", "dev", veth},
		{"link", "set", veth, "up"},
		{"route", "replace", ip + "/32", "dev", veth},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "addr", "add", ip + "/32", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", podGateway, "dev", "eth0", "scope", "link"},
		{"-n", ns, "route", "add", "default", "via", podGateway, "dev", "eth0"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			teardownPodNetwork(ip)
			return fmt.Errorf("pod network for %s (the process node needs root and iproute2): %w", ip, err)
		}
	}
	return nil
}

// teardownPodNetwork removes the pod's namespace; the veth pair and the host route go with it.
func teardownPodNetwork(ip string) {
	_ = exec.Command("ip", "netns", "del", netnsName(ip)).Run()
	_ = exec.Command("ip", "link", "del", hostVeth(ip)).Run()
}

// dialInPod connects to 127.0.0.1:port inside the pod's network namespace, as a kubelet's
// runtime does for port-forwarding. The socket is made on a thread moved into the pod's
// namespace; it stays there after the thread moves back.
func dialInPod(ctx context.Context, ip string, port int32) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		host, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer host.Close()
		pod, err := os.Open(netnsPath(ip))
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("pod network namespace: %w", err)}
			return
		}
		defer pod.Close()
		if err := unix.Setns(int(pod.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter pod network namespace: %w", err)}
			return
		}
		var d net.Dialer
		conn, dialErr := d.DialContext(ctx, "tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err := unix.Setns(int(host.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and dies with this goroutine: it never runs other code.
			done <- result{conn: conn, err: dialErr}
			return
		}
		runtime.UnlockOSThread()
		done <- result{conn: conn, err: dialErr}
	}()
	r := <-done
	return r.conn, r.err
}

// enterNetns is used by exec-container: the calling thread joins the network namespace at
// path (its process then execs, keeping it).
func enterNetns(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Setns(int(f.Fd()), syscall.CLONE_NEWNET)
}
